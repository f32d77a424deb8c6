"""An outage of a source whose kept answers are served stale is one warning when it begins and one
when it ends, however many answers it serves stale; each is counted by source in the metrics."""

import json
import logging
from pathlib import Path

import httpx
import httpx2
import pytest
import respx
from prometheus_client import REGISTRY

from gitlab_pypi_proxy.config import SourceConfig
from gitlab_pypi_proxy.http.serialize import JSON
from gitlab_pypi_proxy.sources.simple_index import SimpleIndexSource
from gitlab_pypi_proxy.sources.upstream import Upstream
from gitlab_pypi_proxy.sources.upstream_health import UpstreamHealth
from tests.unit.indexes import composed

INDEX = "https://stale.example.org/simple/"
NAMES = [f"pkg-{n}" for n in range(12)]


def _page(name: str) -> bytes:
    entry = {"filename": f"{name}-1.0.tar.gz", "url": f"/f/{name}", "hashes": {"sha256": "a" * 64}}
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": [entry]}).encode()


def _answer(request: httpx.Request, status: int) -> httpx.Response:
    """respx answers with httpx's own types (tests/conftest.py)."""
    name = request.url.path.rstrip("/").rsplit("/", 1)[1]
    if status != 200:
        return httpx.Response(status, text="no")
    return httpx.Response(200, headers={"content-type": JSON}, content=_page(name))


def _stale_count() -> float:
    labels = {"source": "public"}
    return REGISTRY.get_sample_value("gitlab_pypi_proxy_stale_answers_total", labels) or 0.0


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("status", "begins", "ends"),
    [
        # the transport saw it: the source's health says it
        (503, "source public is down: HTTP 503", "source public is up again"),
        # it did not (the source answers, refusing the proxy's credentials): the cache says it
        (
            403,
            "source public cannot answer (HTTP 403 (check credentials))",
            f"source public answers again: {len(NAMES)} kept answers were served stale",
        ),
    ],
)
@respx.mock
async def test_one_line_when_an_outage_begins_and_one_when_it_ends(
    client: httpx2.AsyncClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
    begins: str,
    ends: str,
) -> None:
    config = SourceConfig("public", "url", INDEX, username="u", password="p")
    source = SimpleIndexSource(config, Upstream(client, UpstreamHealth()))
    built = composed(tmp_path, [], [source], ttl=0)  # every lookup asks the upstream again
    route = respx.get(url__startswith=INDEX)
    route.side_effect = lambda request: _answer(request, 200)
    for name in NAMES:
        assert not (await built.index.project_page(name)).stale
    before = _stale_count()
    route.side_effect = lambda request: _answer(request, status)
    with caplog.at_level(logging.INFO):
        for name in NAMES:
            assert (await built.index.project_page(name)).stale
        route.side_effect = lambda request: _answer(request, 200)
        assert not (await built.index.project_page(NAMES[0])).stale
    said = _warnings(caplog)
    assert len(said) == 2, said
    assert said[0].startswith(begins) and said[1].startswith(ends), said
    assert _stale_count() - before == len(NAMES)
