"""A checked cache entry's pieces are read on the event loop when the page cache holds them
(RWF_NOWAIT), in a thread when it does not or the system cannot tell: the same bytes either way."""

import asyncio
import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from gitlab_pypi_proxy.http.file_responses import cached_response
from gitlab_pypi_proxy.storage import cached_file
from gitlab_pypi_proxy.storage.cached_file import SERVE_CHUNK, TAIL_BYTES, CachedFile
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.fakes import FakeSource
from tests.unit.test_file_store import opener, read_all

# Three full pieces and a tail short enough to go with the third: three reads.
DATA = os.urandom(3 * SERVE_CHUNK + TAIL_BYTES // 2)
SHA = hashlib.sha256(DATA).hexdigest()


async def _checked_entry(tmp_path: Path) -> tuple[Stores, CachedFile]:
    """A kept entry this process has seen hash right (so it is read without hashing)."""
    store = Stores.local(tmp_path, 100 * 2**20)
    await read_all(
        store.downloads.download(SHA, opener(FakeSource("s", contents={SHA: DATA}), SHA))
    )
    cached = await store.blobs.open(SHA)
    assert isinstance(cached, CachedFile) and cached.check is None and cached.handle is not None
    return store, cached


class Reads:
    """Counts the thread reads and the RWF_NOWAIT reads, and can make the latter fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, nowait: Any = None) -> None:
        self.threaded: list[tuple[int, int]] = []
        self.nowait = 0
        real_read, real_preadv = CachedFile._read, os.preadv

        def counted_read(self_: CachedFile, position: int, length: int, *args: Any) -> bytes:
            self.threaded.append((position, length))
            return real_read(self_, position, length, *args)

        def preadv(fd: int, buffers: list[bytearray], position: int, flags: int = 0) -> int:
            self.nowait += 1
            if nowait is not None:
                return nowait(fd, buffers, position, flags, real_preadv)
            return real_preadv(fd, buffers, position, flags)

        monkeypatch.setattr(CachedFile, "_read", counted_read)
        monkeypatch.setattr(cached_file.os, "preadv", preadv)


async def _served(cached: CachedFile, start: int = 0, end: int | None = None) -> bytes:
    last = cached.size - 1 if end is None else end
    return b"".join([bytes(chunk) async for chunk in cached.chunks(start, last)])


def _warm(cached: CachedFile) -> None:
    assert cached.handle is not None
    os.pread(cached.handle.fileno(), cached.size, 0)  # every page in the page cache


@pytest.fixture(autouse=True)
def _nowait_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the flag as the system offers it (a test may turn it off)."""
    monkeypatch.setattr(cached_file, "_nowait", getattr(os, "RWF_NOWAIT", 0))


async def test_pages_in_memory_are_read_on_the_loop_whole_and_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not getattr(os, "RWF_NOWAIT", 0):
        pytest.fail("this test needs Linux 4.14+ (RWF_NOWAIT), which the proxy is built for")
    _store, cached = await _checked_entry(tmp_path)
    _warm(cached)
    reads = Reads(monkeypatch)
    assert await _served(cached) == DATA
    assert reads.threaded == [] and reads.nowait == 3  # the tail went with the last piece
    assert await _served(cached, 5, SERVE_CHUNK + 9) == DATA[5 : SERVE_CHUNK + 10]
    cached.close()


async def test_pages_not_in_memory_are_read_in_a_thread_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store, cached = await _checked_entry(tmp_path)

    def not_cached(*_: Any) -> int:
        raise BlockingIOError(errno.EAGAIN, "would block")

    reads = Reads(monkeypatch, not_cached)
    assert await _served(cached) == DATA
    assert [length for _, length in reads.threaded] == [
        SERVE_CHUNK,
        SERVE_CHUNK,
        SERVE_CHUNK + TAIL_BYTES // 2,
    ]
    cached.close()


async def test_pages_partly_in_memory_are_read_whole_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store, cached = await _checked_entry(tmp_path)

    def half(fd: int, buffers: list[bytearray], position: int, flags: int, real: Any) -> int:
        got = os.pread(fd, len(buffers[0]) // 2, position)
        buffers[0][: len(got)] = got
        return len(got)

    reads = Reads(monkeypatch, half)
    assert await _served(cached) == DATA
    assert len(reads.threaded) == 3  # each piece again, whole, where the disk may be waited for
    cached.close()


async def test_a_system_without_rwf_nowait_reads_in_threads_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store, cached = await _checked_entry(tmp_path)

    def unsupported(*_: Any) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    reads = Reads(monkeypatch, unsupported)
    assert await _served(cached) == DATA
    assert reads.nowait == 1 and len(reads.threaded) == 3  # asked once, then never again
    cached.close()


async def test_pages_dropped_from_memory_are_still_served_exact(tmp_path: Path) -> None:
    """For real: the kernel's answer for pages not in memory (EAGAIN or fewer bytes), and the
    thread that then reads them from disk."""
    _store, cached = await _checked_entry(tmp_path)
    assert cached.handle is not None
    os.fsync(cached.handle.fileno())
    os.posix_fadvise(cached.handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    assert await _served(cached) == DATA
    cached.close()


async def test_an_unchecked_entry_is_hashed_in_a_thread_never_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _checked_entry(tmp_path)
    other = Stores.local(tmp_path, 100 * 2**20)  # another process: checks on its first serve
    cached = await other.blobs.open(SHA)
    assert isinstance(cached, CachedFile) and cached.check is not None
    _warm(cached)
    reads = Reads(monkeypatch)
    assert await _served(cached) == DATA
    assert reads.nowait == 0 and len(reads.threaded) == 3
    cached.close()


async def test_a_served_entry_is_closed_on_the_loop_once_its_answer_is_sent(
    tmp_path: Path,
) -> None:
    store, cached = await _checked_entry(tmp_path)
    closed_in: list[threading.Thread] = []
    real_close = cached.close

    def close() -> None:
        closed_in.append(threading.current_thread())
        real_close()

    cached.close = close  # type: ignore[method-assign]
    response = cached_response(cached, SHA, Headers(raw=[]), "GET")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response({"type": "http"}, receive, send)
    assert b"".join(bytes(m.get("body", b"")) for m in sent[1:]) == DATA
    assert closed_in == [threading.current_thread()]  # no thread hop for a descriptor's close
    assert cached.handle is not None and cached.handle.closed
    assert SHA not in store.blobs._serving  # no longer protected from eviction
