"""What the metrics count: evictions, single-flight joins."""

import hashlib
import os
from pathlib import Path

from prometheus_client import REGISTRY

from proxy.services import Stores
from tests.unit.fakes import FakeSource
from tests.unit.test_file_store import opener, read_all


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value("gitlab_pypi_proxy_" + name, labels) or 0.0


async def test_evictions_and_single_flight_joins_are_counted(tmp_path: Path) -> None:
    contents = [os.urandom(300_000) for _ in range(4)]
    source = FakeSource("s", contents={hashlib.sha256(c).hexdigest(): c for c in contents})
    store = Stores.local(tmp_path, 700_000)  # room for two of the four
    evictions, joins = (
        _sample("cache_evictions_total"),
        _sample("single_flight_joins_total", cache="file"),
    )
    for content in contents:
        sha = hashlib.sha256(content).hexdigest()
        first = store.downloads.download(sha, opener(source, sha))
        assert (
            store.downloads.download(sha, opener(source, sha)) is first
        )  # joins the running download
        await read_all(first)
    kept = store.blobs.stats().entries
    assert _sample("cache_evictions_total") - evictions == len(contents) - kept > 0
    assert _sample("single_flight_joins_total", cache="file") - joins == len(contents)
    store.close()
