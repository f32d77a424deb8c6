"""Work that several clients share is not cancelled when one of them goes away.

uvicorn does not cancel a request whose client hung up, but a server shutting down, another
ASGI server, or a caller's own timeout does: each shared upstream path is checked here by
cancelling one waiter while the work runs, then letting the work finish for the others.
"""

import asyncio
import base64
import fcntl
import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.aio import TaskSet
from gitlab_pypi_proxy.auth import Authenticator
from gitlab_pypi_proxy.config import AuthConfig
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.index.cached import CachedSource, Freshness, PageKey
from gitlab_pypi_proxy.model import DistFile
from gitlab_pypi_proxy.sources.base import Parts
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed
from tests.waiting import wait_until


async def _cancelled(task: asyncio.Future[object]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_page_fetch_finishes_for_the_others_when_one_waiter_is_cancelled(
    tmp_path: Path,
) -> None:
    stores = Stores.local(tmp_path, 2**30)
    freshness, tasks = Freshness(300, 300), TaskSet(logging.getLogger("test"), "test")
    cached = CachedSource(FakeSource("platform"), stores.pages, stores.locations, freshness, tasks)
    asked, answer = asyncio.Event(), asyncio.Event()
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        asked.set()
        await answer.wait()
        return "the page"

    first = asyncio.ensure_future(cached.fetch(PageKey("platform", "demo"), load))
    await asked.wait()
    second = asyncio.ensure_future(cached.fetch(PageKey("platform", "demo"), load))
    await _cancelled(first)  # the first client hung up mid-fetch
    answer.set()
    assert (await second).value == "the page"
    assert calls == 1
    entry = await stores.pages.get(PageKey("platform", "demo").raw)
    assert entry is not None and entry.value == "the page"  # kept for the next client too
    stores.close()


async def test_a_download_goes_on_for_the_others_when_a_follower_is_cancelled(
    tmp_path: Path,
) -> None:
    content = os.urandom(50_000)
    sha = hashlib.sha256(content).hexdigest()
    gate = asyncio.Event()
    source = FakeSource("s", contents={sha: content}, gate=gate)
    store = Stores.local(tmp_path, 2**30)

    async def read_all(download) -> bytes:  # type: ignore[no-untyped-def]
        return b"".join([chunk async for chunk in download.follow()])

    download = store.downloads.download(
        sha, lambda: source.open_file(source.file_for(sha, "x-1.0.tar.gz"))
    )
    leaving = asyncio.ensure_future(read_all(download))
    staying = asyncio.ensure_future(
        read_all(store.downloads.download(sha, lambda: None))
    )  # joins it
    await asyncio.to_thread(wait_until, lambda: download.written > 0, "the first bytes")
    await _cancelled(leaving)
    gate.set()
    assert await staying == content
    cached = await store.blobs.open(sha)
    assert cached is not None and cached.size == len(content) and source.file_calls == 1
    cached.close()
    store.close()


async def test_a_download_still_starts_when_a_follower_is_cancelled_before_it_does(
    tmp_path: Path,
) -> None:
    """A follower that goes away while the download waits for its lock (another worker holds it,
    say) must not take the download's start down with it."""
    content = os.urandom(5_000)
    sha = hashlib.sha256(content).hexdigest()
    source = FakeSource("s", contents={sha: content})
    store = Stores.local(tmp_path, 2**30)
    opened = asyncio.Event()

    def opener():  # type: ignore[no-untyped-def]
        opened.set()
        return source.open_file(source.file_for(sha, "x-1.0.tar.gz"))

    following = asyncio.Event()

    async def first_chunk(download) -> bytes:  # type: ignore[no-untyped-def]
        following.set()  # runs on into follow() and waits there for the start, in this step
        async for chunk in download.follow():
            return chunk
        return b""

    lock = os.open(tmp_path / "files" / "locks" / sha, os.O_CREAT | os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # "another worker" is downloading it
    try:
        download = store.downloads.download(sha, opener)
        leaving = asyncio.ensure_future(first_chunk(download))
        await following.wait()
        await _cancelled(leaving)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    await download.wait()  # raises the download's error if the cancellation reached it
    assert opened.is_set()
    cached = await store.blobs.open(sha)
    assert cached is not None and cached.size == len(content)
    cached.close()
    store.close()


class GatedSidecars(FakeSource):
    """A source that advertises core metadata and hands it out when `answer` is set."""

    def __init__(self) -> None:
        super().__init__("public")
        self.asked, self.answer = asyncio.Event(), asyncio.Event()
        self.calls = 0

    async def core_metadata(self, file: DistFile) -> bytes:
        self.calls += 1
        self.asked.set()
        await self.answer.wait()
        return b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n"


async def test_core_metadata_is_obtained_for_the_others_when_one_waiter_is_cancelled(
    tmp_path: Path,
) -> None:
    filename, data = make_wheel("demo", "1.0")
    source = GatedSidecars()
    file = replace(
        source.add("demo", filename, hashlib.sha256(data).hexdigest(), data),
        core_metadata_sha256="advertised",
    )
    service = composed(tmp_path, [], [Parts(source, sidecars=source)]).metadata
    first = asyncio.ensure_future(service.ensure(file))
    await source.asked.wait()
    second = asyncio.ensure_future(service.ensure(file))
    await _cancelled(first)
    source.answer.set()
    assert await second is not None
    assert await service.store.get(file.source, file.sha256) is not None and source.calls == 1
    await service.close()


async def test_passthrough_credentials_are_checked_for_the_others_when_one_is_cancelled() -> None:
    asked, answer = asyncio.Event(), asyncio.Event()
    calls = 0

    async def probe(auth: httpx2.Auth) -> bool:
        nonlocal calls
        calls += 1
        asked.set()
        await answer.wait()
        return True

    config = AuthConfig(anonymous_read=False, passthrough=True)
    auth = Authenticator(config, [], frozenset({"platform"}), {"platform": probe})
    header = "Basic " + base64.b64encode(b"gitlab-ci-token:job-token").decode()
    first = asyncio.ensure_future(auth.identify(header))
    await asked.wait()
    second = asyncio.ensure_future(auth.identify(header))
    await _cancelled(first)
    answer.set()
    identity = await second
    assert identity.passthrough and identity.readable == frozenset({"platform"})
    assert calls == 1
