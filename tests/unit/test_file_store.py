"""The verified file store: single-flight, verification, eviction safety, no partial entries."""

import asyncio
import contextlib
import errno
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitlab_pypi_proxy.errors import HashMismatch
from gitlab_pypi_proxy.storage import downloads as downloads_module
from gitlab_pypi_proxy.storage import leftovers, usage
from gitlab_pypi_proxy.storage import local_blobs as blobs_module
from gitlab_pypi_proxy.storage.blobs import CacheUnwritable
from gitlab_pypi_proxy.storage.cached_file import CorruptEntry
from gitlab_pypi_proxy.storage.downloads import Declined, verified
from gitlab_pypi_proxy.storage.file_index import BLOBS, FileIndex
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.fakes import FakeSource
from tests.waiting import async_wait_until, wait_until

CONTENT = os.urandom(300_000)
SHA = hashlib.sha256(CONTENT).hexdigest()


def opener(source: FakeSource, sha: str = SHA):
    return lambda: source.open_file(source.file_for(sha, "x-1.0.tar.gz"))


async def read_all(download) -> bytes:
    return b"".join([chunk async for chunk in download.follow()])


def counts(stores: Stores) -> tuple[int, int]:
    """(hits, misses) as `cache stats` reads them."""
    stats = stores.blobs.stats()
    return stats.hits, stats.misses


async def served(cached) -> bytes:
    """What a client gets for the whole of a kept file."""
    return b"".join([chunk async for chunk in cached.chunks(0, cached.size - 1)])


async def test_download_is_verified_kept_and_served_from_cache(tmp_path: Path) -> None:
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    download = store.downloads.download(SHA, opener(source))
    await download.started
    assert download.size == len(CONTENT)
    assert await read_all(download) == CONTENT
    cached = await store.blobs.open(SHA)
    assert cached is not None and cached.size == len(CONTENT)
    assert await served(cached) == CONTENT
    cached.close()
    assert list((tmp_path / "files" / "incoming").iterdir()) == []


async def test_wrong_bytes_are_never_kept_and_never_served_whole(tmp_path: Path) -> None:
    wrong = bytearray(CONTENT)
    wrong[-1] ^= 1
    source = FakeSource("s", contents={SHA: bytes(wrong)})
    store = Stores.local(tmp_path, 10 * 2**20)
    download = store.downloads.download(SHA, opener(source))
    received = bytearray()
    with pytest.raises(HashMismatch):
        async for chunk in download.follow():
            received += chunk
    assert len(received) < len(CONTENT)  # the client never had a whole (wrong) file
    assert await store.blobs.open(SHA) is None
    assert list((tmp_path / "files" / "incoming").iterdir()) == []


async def test_concurrent_requests_download_once_and_all_get_everything(tmp_path: Path) -> None:
    gate = asyncio.Event()
    source = FakeSource("s", contents={SHA: CONTENT}, gate=gate)
    store = Stores.local(tmp_path, 10 * 2**20)
    downloads = [store.downloads.download(SHA, opener(source)) for _ in range(20)]
    readers = [asyncio.ensure_future(read_all(d)) for d in downloads]
    await downloads[0].started
    gate.set()
    bodies = await asyncio.gather(*readers)
    assert source.file_calls == 1
    assert all(body == CONTENT for body in bodies)


async def test_a_reader_keeps_an_evicted_file(tmp_path: Path) -> None:
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    await read_all(store.downloads.download(SHA, opener(source)))
    cached = await store.blobs.open(SHA, count=False)
    assert cached is not None and cached.handle is not None
    store.blobs.delete(SHA)  # what eviction does
    assert await store.blobs.open(SHA) is None
    assert cached.handle.read() == CONTENT
    cached.close()


async def _downloaded(store: Stores, count: int, size: int = 300_000) -> list[bytes]:
    """`count` files of `size` random bytes, downloaded through `store` one after another."""
    contents = [os.urandom(size) for _ in range(count)]
    source = FakeSource("s", contents={hashlib.sha256(c).hexdigest(): c for c in contents})
    for content in contents:
        sha = hashlib.sha256(content).hexdigest()
        await read_all(store.downloads.download(sha, opener(source, sha)))
    return contents


async def test_eviction_keeps_the_store_under_its_size(tmp_path: Path) -> None:
    store = Stores.local(tmp_path, 700_000)
    contents = await _downloaded(store, 4)
    assert store.blobs.stats().bytes <= 700_000
    newest = hashlib.sha256(contents[-1]).hexdigest()
    assert await store.blobs.open(newest) is not None


async def test_a_download_preallocated_while_room_is_made_is_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room is made while another thread preallocates a download's spool: its bytes count once,
    claimed or on disk, and an entry that fits is not evicted for it."""
    store = Stores.local(tmp_path, 1_000_000)
    contents = await _downloaded(store, 2)
    spool = store.blobs.spool("c" * 64)
    scandir = os.scandir

    def preallocated_meanwhile(path):  # the reserving thread's fallocate lands now
        os.truncate(spool.path, 300_000)
        return scandir(path)

    monkeypatch.setattr(blobs_module.os, "posix_fallocate", lambda fd, offset, length: None)
    monkeypatch.setattr(leftovers.os, "scandir", preallocated_meanwhile)
    await store.blobs.reserve(spool, 300_000)
    await store.blobs._tasks.settled()
    monkeypatch.undo()
    assert store.blobs.evicted == 0  # 900,000 bytes fit in 1,000,000
    assert all([hashlib.sha256(c).hexdigest() in store.blobs for c in contents])
    store.blobs.discard(spool)


async def test_truncated_size_is_dropped_on_read(tmp_path: Path) -> None:
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    await read_all(store.downloads.download(SHA, opener(source)))
    cached = store.blobs.open_now(SHA)
    assert cached is not None and cached.handle is not None
    path = cached.handle.name
    cached.close()
    with open(path, "r+b") as handle:
        handle.truncate(100)
    assert await store.blobs.open(SHA) is None
    assert SHA not in store.blobs


async def test_upstream_failure_before_first_byte_reaches_started(tmp_path: Path) -> None:
    source = FakeSource("s", contents={})
    store = Stores.local(tmp_path, 10 * 2**20)
    download = store.downloads.download(SHA, opener(source))
    with pytest.raises(Exception, match=r"x-1\.0\.tar\.gz"):
        await download.started
    assert await store.blobs.open(SHA) is None


async def test_a_client_that_joined_a_declining_look_ahead_downloads_itself(
    tmp_path: Path,
) -> None:
    stores = Stores.local(tmp_path, 2**30)
    source = FakeSource("platform", contents={SHA: CONTENT})
    asked, decide = asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def look_ahead():
        asked.set()
        await decide.wait()
        raise Declined("larger than one read")
        yield  # an async generator: the context manager's body is never reached

    ahead = stores.downloads.download(SHA, look_ahead)
    await asyncio.wait_for(asked.wait(), 10)
    client = asyncio.create_task(stores.downloads.started(SHA, opener(source)))
    await asyncio.sleep(0)
    decide.set()
    download = await asyncio.wait_for(client, 10)
    assert download is not ahead
    assert await read_all(download) == CONTENT
    assert source.file_calls == 1
    with pytest.raises(Declined):
        await ahead.wait()


async def test_two_workers_sharing_a_directory_download_once(tmp_path: Path) -> None:
    """Two stores on one directory stand for two worker processes: the coordinator's lock
    separates them."""
    gate = asyncio.Event()
    source = FakeSource("s", contents={SHA: CONTENT}, gate=gate)
    first, second = Stores.local(tmp_path, 10 * 2**20), Stores.local(tmp_path, 10 * 2**20)
    one = first.downloads.download(SHA, opener(source))
    await one.started
    two = second.downloads.download(SHA, opener(source))
    readers = [asyncio.ensure_future(read_all(d)) for d in (one, two)]
    gate.set()
    assert await asyncio.gather(*readers) == [CONTENT, CONTENT]
    assert source.file_calls == 1
    for download in (one, two):  # its readers may be done before it lets go of its lock
        await download.wait()
    assert list((tmp_path / "files" / "locks").iterdir()) == []


@pytest.mark.parametrize("read", ["whole", "range"])
async def test_a_follower_joining_while_the_file_moves_into_the_store_reads_it_from_there(
    tmp_path: Path, read: str
) -> None:
    """Between the store taking the spool (a rename) and listing the file (a row written
    after), neither is there: a follower joining then waits for the store, it does not ask the
    upstream again."""
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    index = store.blobs._index  # type: ignore[attr-defined]
    storing, moved, release = threading.Event(), threading.Event(), threading.Event()
    writing, store_file = index._writing, index.store

    @contextlib.contextmanager
    def held_writing() -> Iterator[object]:
        if storing.is_set():  # in `store`: the spool is renamed in, its row not written yet
            moved.set()
            release.wait(30)
        with writing() as sql:
            yield sql

    def storing_file(*args: object) -> None:
        storing.set()
        store_file(*args)

    index._writing, index.store = held_writing, storing_file
    download = store.downloads.download(SHA, opener(source))
    await asyncio.to_thread(moved.wait, 30)
    looked: list[object] = []
    reopen = download._reopen

    def looking():  # type: ignore[no-untyped-def]
        looked.append(found := reopen())
        return found

    download._reopen = looking  # type: ignore[method-assign]
    follower = asyncio.ensure_future(
        read_all(download) if read == "whole" else _joined(download.range(10, 99))
    )
    await async_wait_until(lambda: looked, "the follower to find no spool and no row")
    release.set()
    expected = CONTENT if read == "whole" else CONTENT[10:100]
    assert await asyncio.wait_for(follower, 30) == expected
    assert source.file_calls == 1
    await download.wait()
    store.close()


async def _joined(chunks) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join([chunk async for chunk in chunks])


async def test_a_cache_that_cannot_take_a_file_degrades_to_serving_unkept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(leftovers.tempfile, "mkstemp", full)
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    download = store.downloads.download(SHA, opener(source))
    with pytest.raises(CacheUnwritable):
        await download.started
    assert not store.blobs.keeping
    assert source.file_calls == 0  # the upstream is left to the unkept path
    assert await store.blobs.open(SHA) is None


def fail_writes_after(monkeypatch: pytest.MonkeyPatch, good: int, errno_: int) -> None:
    """The cache's file writes fail after `good` chunks, as on a disk that fills or turns
    read-only during a download."""
    writes, write = [], downloads_module._write

    def failing(handle, digest, chunk: bytes) -> None:
        writes.append(len(chunk))
        if len(writes) > good:
            raise OSError(errno_, os.strerror(errno_))
        write(handle, digest, chunk)

    monkeypatch.setattr(downloads_module, "_write", failing)


@pytest.mark.parametrize("errno_", [errno.ENOSPC, errno.EROFS])
async def test_a_write_failing_midway_keeps_nothing_and_every_follower_gets_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_: int
) -> None:
    fail_writes_after(monkeypatch, 100, errno_)  # 100 chunks of 1,000 bytes are out
    gate = asyncio.Event()
    source = FakeSource("s", contents={SHA: CONTENT}, gate=gate)
    store = Stores.local(tmp_path, 10 * 2**20)
    download = store.downloads.download(SHA, opener(source))
    first = asyncio.ensure_future(read_all(download))
    await download.started
    later = [
        asyncio.ensure_future(read_all(store.downloads.download(SHA, opener(source))))
        for _ in range(3)
    ]
    gate.set()
    assert await asyncio.gather(first, *later) == [CONTENT] * 4
    with pytest.raises(CacheUnwritable):
        await download.wait()
    assert not store.blobs.keeping
    assert source.file_calls == 5  # the download, then each follower for the rest
    assert await store.blobs.open(SHA) is None
    assert list((tmp_path / "files" / "incoming").iterdir()) == []


async def test_the_rest_from_upstream_must_continue_the_bytes_already_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_writes_after(monkeypatch, 100, errno.EROFS)
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    download = store.downloads.download(SHA, opener(source))
    await download.started
    other = bytearray(CONTENT)
    other[10] ^= 1  # within the part already sent: the second answer is another file
    source.contents[SHA] = bytes(other)
    received = bytearray()
    with pytest.raises(HashMismatch):
        async for chunk in download.follow():
            received += chunk
    assert len(received) < len(CONTENT)


async def test_a_disk_too_full_for_the_file_is_found_before_a_byte_goes_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        assert length == len(CONTENT)  # the whole announced size, reserved at once
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blobs_module.os, "posix_fallocate", no_space)
    store = Stores.local(tmp_path, 10 * 2**20)
    download = store.downloads.download(SHA, opener(FakeSource("s", contents={SHA: CONTENT})))
    with pytest.raises(CacheUnwritable):
        await download.started  # the route streams it unkept instead
    with pytest.raises(CacheUnwritable):
        await download.wait()
    assert download.written == 0 and not store.blobs.keeping
    assert list((tmp_path / "files" / "incoming").iterdir()) == []


async def test_a_verified_file_the_index_cannot_record_is_served_whole_and_left_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def full(index: FileIndex) -> Iterator[None]:
        raise sqlite3.OperationalError("database or disk is full")
        yield

    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    monkeypatch.setattr(FileIndex, "_writing", full)  # the row, after the file was moved in
    download = store.downloads.download(SHA, opener(source))
    assert await read_all(download) == CONTENT
    assert await read_all(download) == CONTENT  # a reader arriving after the end too
    with pytest.raises(CacheUnwritable):
        await download.wait()
    assert not store.blobs.keeping and await store.blobs.open(SHA) is None
    assert [p for p in (tmp_path / "files" / BLOBS).rglob("*") if p.is_file()] == []
    assert list((tmp_path / "files" / "incoming").iterdir()) == []


async def _chunks(data: bytes):
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


async def test_verified_passes_the_right_bytes_and_never_completes_wrong_ones() -> None:
    assert b"".join([c async for c in verified(_chunks(CONTENT), SHA)]) == CONTENT
    wrong, received = CONTENT[:-1] + bytes([CONTENT[-1] ^ 1]), bytearray()
    with pytest.raises(HashMismatch):
        async for chunk in verified(_chunks(wrong), SHA):
            received += chunk
    assert len(received) < len(CONTENT)


def _flip_a_byte(store: Stores, sha: str, offset: int) -> None:
    """Same size, one bit other: only hashing finds it (a write, so the file's ctime moves)."""
    cached = store.blobs.open_now(sha)
    assert cached is not None and cached.handle is not None
    path = cached.handle.name
    cached.close()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 1]))


async def test_a_corrupt_small_entry_is_a_miss_and_dropped(tmp_path: Path, caplog) -> None:
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    await read_all(store.downloads.download(SHA, opener(source)))
    first = await store.blobs.open(SHA)
    assert first is not None and await served(first) == CONTENT
    _flip_a_byte(store, SHA, 1234)
    assert await store.blobs.open(SHA) is None  # the caller fetches it again
    assert SHA not in store.blobs
    assert f"cache entry {SHA} is corrupt" in caplog.text


BIG = os.urandom(3 * 2**20 + 5)  # more than one read: checked while it is sent
BIG_SHA = hashlib.sha256(BIG).hexdigest()


async def _big_store(tmp_path: Path) -> Stores:
    source = FakeSource("s", contents={BIG_SHA: BIG})
    store = Stores.local(tmp_path, 100 * 2**20)
    await read_all(store.downloads.download(BIG_SHA, opener(source, BIG_SHA)))
    return store


async def test_a_corrupt_large_entry_is_cut_before_its_end_and_dropped(
    tmp_path: Path, caplog
) -> None:
    store = await _big_store(tmp_path)
    _flip_a_byte(store, BIG_SHA, 2**20 + 7)
    cached = await store.blobs.open(BIG_SHA)
    assert cached is not None and cached.check is not None  # changed since it was checked
    received = bytearray()
    with pytest.raises(CorruptEntry):
        async for chunk in cached.chunks(0, cached.size - 1):
            received += chunk
    cached.close()
    assert len(received) < len(BIG)  # never the whole (wrong) file
    assert BIG_SHA not in store.blobs
    assert f"cache entry {BIG_SHA} is corrupt" in caplog.text


async def test_a_range_of_an_unchecked_corrupt_entry_is_refused(tmp_path: Path) -> None:
    store = await _big_store(tmp_path)
    _flip_a_byte(store, BIG_SHA, 5)
    cached = await store.blobs.open(BIG_SHA)
    assert cached is not None
    with pytest.raises(CorruptEntry):
        async for _ in cached.chunks(len(BIG) - 100, len(BIG) - 1):  # the tail is intact
            pytest.fail("no byte of a corrupt entry is sent")
    cached.close()
    assert BIG_SHA not in store.blobs


async def test_an_entry_is_hashed_once_per_process_until_it_changes(tmp_path: Path) -> None:
    store = await _big_store(tmp_path)
    fresh = await store.blobs.open(BIG_SHA)
    assert fresh is not None and fresh.check is None  # the download hashed these very bytes
    fresh.close()
    other = Stores.local(tmp_path, 100 * 2**20)  # another process: checks on its first serve
    first = await other.blobs.open(BIG_SHA)
    assert first is not None and first.check is not None
    assert await served(first) == BIG
    first.close()
    again = await other.blobs.open(BIG_SHA)
    assert again is not None and again.check is None
    assert await served(again) == BIG
    again.close()


async def test_hits_and_misses_reach_the_shared_counters_without_another_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage, "FLUSH_SECONDS", 0.2)
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    await read_all(store.downloads.download(SHA, opener(source)))
    for sha in (SHA, SHA, SHA, "0" * 64):  # three hits, one miss, all within one interval
        cached = await store.blobs.open(sha)
        if cached is not None:
            cached.close()
    stats = Stores.local(tmp_path, 10 * 2**20, count_hits=False)  # `cache stats`, meanwhile
    await asyncio.to_thread(wait_until, lambda: counts(stats) == (3, 1), "the counts written", 10)
    store.close()
    stats.close()


async def test_hits_on_a_disk_that_cannot_take_writes_are_served_and_counted_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(usage, "FLUSH_SECONDS", 0.05)
    source = FakeSource("s", contents={SHA: CONTENT})
    store = Stores.local(tmp_path, 10 * 2**20)
    await read_all(store.downloads.download(SHA, opener(source)))
    index, attempts = store.blobs._index, []
    write = index.write_usage

    def full(pending) -> None:
        attempts.append(pending)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(index, "write_usage", full)
    for _ in range(5):
        cached = await store.blobs.open(SHA)
        assert cached is not None and await served(cached) == CONTENT
        cached.close()
        tried = len(attempts)
        await asyncio.to_thread(wait_until, lambda: len(attempts) > tried, "a try")  # noqa: B023
    assert caplog.text.count("cache upkeep (access times, counters, room) failing") == 1
    monkeypatch.setattr(index, "write_usage", write)
    await store.blobs.open(SHA)
    stats = Stores.local(tmp_path, 10 * 2**20, count_hits=False)
    await asyncio.to_thread(wait_until, lambda: counts(stats)[0] == 6, "counts kept")
    assert "cache upkeep works again" in caplog.text
    store.close()
    stats.close()
