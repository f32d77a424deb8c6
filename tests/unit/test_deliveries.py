"""Delivery records (gitlab_pypi_proxy.storage.deliveries) and what rests on them: cached bytes
reach a reader only once a source it may read delivered them, a verification runs once however
many ask (in this process and across workers), and the sidecars of one source are never served
for another's listing of the same digest."""

import asyncio
import hashlib
import io
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import load
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.errors import NotAsListed
from gitlab_pypi_proxy.index.provenance_passthrough import Provenances
from gitlab_pypi_proxy.model import DistFile, FileStream
from gitlab_pypi_proxy.offline import prefetch
from gitlab_pypi_proxy.offline.progress import PlainProgress
from gitlab_pypi_proxy.sources.base import Parts
from gitlab_pypi_proxy.storage.provenance_store import ProvenanceStore
from gitlab_pypi_proxy.storage.stores import Stores
from tests.proxy_process import write_config
from tests.servers import serve
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed
from tests.waiting import async_wait_until

DATA = b"the secret wheel's bytes"
SHA = hashlib.sha256(DATA).hexdigest()


class Opened:
    """An opener of `data` that counts its calls and may wait for `gate` before the bytes."""

    def __init__(self, data: bytes, source: str, gate: asyncio.Event | None = None) -> None:
        self.data, self.source, self.gate, self.calls = data, source, gate, 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[FileStream]:
        self.calls += 1

        async def chunks() -> AsyncIterator[bytes]:
            if self.gate is not None:
                await self.gate.wait()
            yield self.data

        yield FileStream(len(self.data), chunks(), self.source)


async def test_concurrent_readers_share_one_verification_and_it_is_recorded(
    tmp_path: Path,
) -> None:
    deliveries = Stores.local(tmp_path, 2**30).deliveries
    gate = asyncio.Event()
    opener = Opened(DATA, "mirror", gate)
    waiting = [
        asyncio.ensure_future(deliveries.verify(SHA, "mirror", "a-1.0.tar.gz", opener))
        for _ in range(5)
    ]
    await async_wait_until(lambda: opener.calls, "the verification to start")
    gate.set()
    await asyncio.gather(*waiting)
    assert opener.calls == 1
    assert await deliveries.sources(SHA) == {"mirror"}
    await deliveries.verify(SHA, "mirror", "a-1.0.tar.gz", opener)  # recorded: no download
    assert opener.calls == 1


async def test_a_worker_that_waited_for_the_lock_finds_it_verified_and_downloads_nothing(
    tmp_path: Path,
) -> None:
    """Two workers of one machine: the second waits on the digest's lock while the first
    verifies, then reads the record again instead of downloading."""
    first, second = Stores.local(tmp_path, 2**30), Stores.local(tmp_path, 2**30)
    gate, asked = asyncio.Event(), asyncio.Event()
    one, other = Opened(DATA, "mirror", gate), Opened(DATA, "mirror")
    verifying = asyncio.ensure_future(first.deliveries.verify(SHA, "mirror", "a.tar.gz", one))
    await async_wait_until(lambda: one.calls, "the first worker to hold the lock")
    lock = second.coordinator.lock

    def asking(key: str) -> AbstractAsyncContextManager[None]:
        asked.set()
        return lock(key)

    second.coordinator.lock = asking  # type: ignore[method-assign]
    waiting = asyncio.ensure_future(second.deliveries.verify(SHA, "mirror", "a.tar.gz", other))
    await asked.wait()  # the second worker waits for the lock the first holds
    gate.set()
    await asyncio.gather(verifying, waiting)
    assert (one.calls, other.calls) == (1, 0)


async def test_bytes_unlike_their_listing_are_one_warning_and_no_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deliveries = Stores.local(tmp_path, 2**30).deliveries
    forged = Opened(b"the writer's own bytes", "uploads")
    with caplog.at_level(logging.INFO), pytest.raises(NotAsListed) as refused:
        await deliveries.verify(SHA, "uploads", "team_tool-1.0-py3-none-any.whl", forged)
    assert str(refused.value) == (
        "source uploads: team_tool-1.0-py3-none-any.whl sha256 does not match its listing"
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "uploads" in warnings[0] and "team_tool-1.0-py3-none-any.whl" in warnings[0]
    assert SHA in warnings[0]
    assert await deliveries.sources(SHA) is None


async def test_a_download_records_the_source_it_read_and_a_cached_file_records_none(
    tmp_path: Path,
) -> None:
    platform = FakeSource("platform")
    file = platform.add("a", "a-1.0.tar.gz", SHA, DATA)
    stores = Stores.local(tmp_path, 2**30)
    files = composed(tmp_path, [platform], stores=stores).files
    download = await stores.downloads.started(SHA, files.opener([file]))
    await download.wait()
    assert download.source == "platform"
    assert await stores.deliveries.sources(SHA) == {"platform"}
    again = await stores.downloads.started(SHA, files.opener([file]))  # kept: nothing read
    assert again.source is None and platform.file_calls == 1


async def test_who_may_have_the_cached_bytes(tmp_path: Path) -> None:
    sources = [FakeSource("platform"), FakeSource("mirror"), FakeSource("uploads")]
    stores = Stores.local(tmp_path, 2**30)
    files = composed(tmp_path, sources, stores=stores).files
    # no record at all (cached by an earlier version): only a reader of every source
    assert await files.delivered(SHA, None)
    assert not await files.delivered(SHA, frozenset({"platform"}))
    await stores.deliveries.add(SHA, "platform")
    assert await files.delivered(SHA, None)
    assert await files.delivered(SHA, frozenset({"platform", "uploads"}))
    assert not await files.delivered(SHA, frozenset({"uploads"}))
    other = "b" * 64  # delivered by a source no longer configured: nobody's without a check
    await stores.deliveries.add(other, "removed")
    assert not await files.delivered(other, None)


async def test_a_reader_tries_its_candidates_and_the_forger_is_named(tmp_path: Path) -> None:
    uploads, mirror = FakeSource("uploads"), FakeSource("mirror")
    forged = uploads.add("a", "a-1.0.tar.gz", SHA, b"other bytes")
    files = composed(tmp_path, [uploads, mirror]).files
    with pytest.raises(NotAsListed, match=r"source uploads: a-1\.0\.tar\.gz"):
        await files.verify(SHA, "a-1.0.tar.gz", [forged])
    real = mirror.add("a", "a-1.0.tar.gz", SHA, DATA)
    assert await files.verify(SHA, "a-1.0.tar.gz", [forged, real]) == "mirror"


class Sidecar(FakeSource):
    """A public index with its own PEP 658 and PEP 740 sidecars."""

    def __init__(self, name: str, metadata: bytes, provenance: bytes = b"{}") -> None:
        super().__init__(name)
        self.metadata, self.provenance_body = metadata, provenance

    async def core_metadata(self, file: DistFile) -> bytes:
        return self.metadata

    async def provenance(self, file: DistFile) -> bytes:
        return self.provenance_body


async def test_one_sources_metadata_is_never_served_for_anothers_listing(tmp_path: Path) -> None:
    filename = "secret-1.0-py3-none-any.whl"
    secret = Sidecar("secret", b"Name: secret\nRequires-Dist: hidden-dep\n")
    hostile = Sidecar("hostile", b"Name: forged\n")
    for source, project in ((secret, "secret"), (hostile, "forged")):
        file = source.add(project, filename, SHA, DATA)
        source.pages[project][-1] = replace(file, core_metadata_sha256="advertised")
    built = composed(
        tmp_path, [], [Parts(secret, sidecars=secret), Parts(hostile, sidecars=hostile)]
    )
    for project in ("secret", "forged"):  # both pages read: both listings are known
        await built.plain.project_page(project)
    await built.tasks.settled()  # where their files are is remembered in the background
    metadata = built.metadata
    # neither what the forger's index says poisons the real one's, nor the other way round
    assert await metadata.sidecar(SHA, filename, frozenset({"hostile"})) == hostile.metadata
    assert await metadata.sidecar(SHA, filename, frozenset({"secret"})) == secret.metadata
    assert await metadata.sidecar(SHA, filename, frozenset({"hostile"})) == hostile.metadata


async def test_metadata_of_the_cached_file_is_advertised_only_for_a_source_that_delivered_it(
    tmp_path: Path,
) -> None:
    filename, data = make_wheel("demo", "1.0", requires_dist=["hidden-dep"])
    sha = hashlib.sha256(data).hexdigest()
    secret, uploads = FakeSource("secret"), FakeSource("uploads")
    secret.add("demo", filename, sha, data)
    uploads.add("demo", filename, sha, b"the writer's own bytes")
    stores = Stores.local(tmp_path, 2**30)
    built = composed(tmp_path, [secret, uploads], stores=stores)
    download = await stores.downloads.started(sha, built.files.opener(secret.pages["demo"]))
    built.metadata.after_download(download, sha, filename)
    await download.wait()
    await built.metadata.tasks.settled()

    async def advertised(reader: str) -> str | None:
        page = await built.index.project_page("demo", frozenset({reader}))
        await built.metadata.tasks.settled()
        page = await built.index.project_page("demo", frozenset({reader}))
        return page.files[0].core_metadata_sha256

    assert await advertised("secret") is not None
    assert await advertised("uploads") is None
    assert await built.metadata.sidecar(sha, filename, frozenset({"uploads"})) is None
    await built.close()


async def test_one_sources_provenance_is_never_served_for_anothers_listing(
    tmp_path: Path,
) -> None:
    filename = "demo-1.0-py3-none-any.whl"
    public = Sidecar("public", b"", provenance=b'{"from": "public"}')
    hostile = Sidecar("hostile", b"", provenance=b'{"from": "hostile"}')
    stores = Stores.local(tmp_path, 2**30)
    for source in (public, hostile):
        file = replace(source.add("demo", filename, SHA, DATA), provenance=f"fake://{source.name}")
        await stores.locations.remember([file])
    provenances = Provenances(
        ProvenanceStore(tmp_path), stores.locations, {"public": public, "hostile": hostile}
    )
    assert (await provenances.get(SHA, filename, frozenset({"public"}))).body == (
        b'{"from": "public"}'
    )
    kept = await provenances.get(SHA, filename, frozenset({"hostile"}))
    assert kept.body == b'{"from": "hostile"}'


async def test_prefetch_has_the_listing_source_deliver_a_file_cached_without_a_record(
    tmp_path: Path,
) -> None:
    """A file cached before delivery records existed: prefetch has the source that lists it
    deliver it once (so that an offline reader of that source alone is served it), and a
    listing whose bytes differ fails with the reason."""
    filename, data = make_wheel("app", "1.0")
    sha = hashlib.sha256(data).hexdigest()
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    double.add_project(13, "acme/uploads", public=True)
    double.add_package_file(11, "app", "1.0", filename, data)
    forged, _ = make_wheel("team-tool", "1.0")
    double.add_package_file(13, "team-tool", "1.0", forged, b"the writer's bytes", sha256=sha)
    earlier = Stores.local(tmp_path / "cache", 2**30)
    earlier.downloads.add(sha, io.BytesIO(data))  # kept by an earlier version: no record
    earlier.close()
    with serve(double.app) as gitlab:
        sources = [
            {"name": "platform", "gitlab_project": 11},
            {"name": "uploads", "gitlab_project": 13},
        ]
        config = load(write_config(tmp_path, gitlab.url, sources))
        reports = [
            await prefetch.run(config, prefetch.Inputs(packages=[name]), 2, PlainProgress(out))
            for name, out in (("app", io.StringIO()), ("team-tool", io.StringIO()))
        ]
    outcomes = [(o.label, o.status, o.reason) for r in reports for o in r.outcomes]
    assert outcomes == [
        (filename, "cached", ""),
        (
            forged,
            "failed",
            f"sha256 mismatch: source uploads: {forged} sha256 does not match its listing",
        ),
    ]
    assert len(double.matching(rf"/api/v4/projects/11/packages/pypi/files/{sha}/{filename}")) == 1
    stores = Stores.local(tmp_path / "cache", 2**30)
    try:
        assert await stores.deliveries.sources(sha) == {"platform"}
    finally:
        stores.close()
