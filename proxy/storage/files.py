"""Distribution file cache: content-addressed, verified before it is kept, single-flight.

A download runs once per file, as a task of its own, writing to a temporary file while hashing
it; worker processes sharing the directory take an flock per digest, so it runs once per machine.
Every client (the first included) follows that file as it grows, so latecomers get the whole body
and a client hanging up does not stop the download. The last bytes are held back until the sha256
is checked: on a mismatch no client ever receives a complete wrong file, and nothing is kept. A
verified file is moved (not copied) into the cache.

`max_size` bounds the kept files plus the downloads still arriving (their partial files, and the
rest of the size they announced): when a download starts and when a file is kept, just enough of
the least recently used entries are evicted (proxy.storage.file_index), never the file being kept
nor one this process is serving (an open reader would keep its bytes anyway: POSIX unlink). A file
larger than `max_size` is served but not kept. A cache hit writes nothing: uses and counters are
noted in memory and written in batches (proxy.storage.usage); the bytes of a hit are checked on the
way out (proxy.storage.cached_file).
All disk I/O and hashing happen in worker threads, never on the event loop.

A cache directory that cannot be written (disk full, read-only) degrades instead of failing
(proxy.storage.writable): kept files are still served, lookups that cannot be recorded are read
without recording, and new files are streamed from upstream verified (`verified`) but not kept.
A download reserves its whole size before the first byte goes out, so a full disk is found
while nothing is at stake; a write that still fails midway (the disk turned read-only) leaves
every follower to fetch the rest itself, checked against what it has sent, so no response is cut.
"""

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import diskcache

from proxy import metrics
from proxy.aio import SingleFlight, TaskSet, TTLMemo
from proxy.errors import HashMismatch
from proxy.sources.base import FileStream
from proxy.storage import usage
from proxy.storage.cached_file import SERVE_CHUNK, CachedFile, Check, CorruptEntry, read_whole
from proxy.storage.file_index import FileIndex
from proxy.storage.leftovers import Orphans, partial_bytes, remove_orphans
from proxy.storage.writable import WRITE_ERRORS, writes_for

log = logging.getLogger("proxy.cache.files")

CHUNK = 256 * 1024
_LOCK_POLL = 0.05  # seconds between tries for another worker's download lock
# posix_fallocate cannot reserve space on this file system: write without a reservation
_NO_RESERVATION = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class CacheUnwritable(Exception):
    """The cache directory cannot take a new file now; serve it without keeping it."""


_UPKEEP_ERRORS = (sqlite3.Error, diskcache.Timeout, OSError)
_VERIFIED_MEMORY = 100_000  # files remembered as checked; past it, checked again


class Download:
    """One upstream download, followed by any number of readers."""

    def __init__(
        self,
        sha256: str,
        reopen: Callable[[], "CachedFile | None"],
        opener: Callable[[], AbstractAsyncContextManager[FileStream]],
    ) -> None:
        self.sha256, self._reopen, self._opener = sha256, reopen, opener
        self.path = ""  # the temporary file, made once the download is sure to run
        self.size: int | None = None  # as announced by the upstream
        self.written = 0
        self.done = False
        self.error: BaseException | None = None  # the bytes written will never be whole
        self.unkept: CacheUnwritable | None = None  # whole and verified, but the cache refused it
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Event()

    def notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    @property
    def readable(self) -> int:
        # Hold back the last byte until the digest is checked: a wrong file never arrives whole.
        return self.written if self.done and self.error is None else max(0, self.written - 1)

    def _open_reader(self) -> BinaryIO | None:
        """The file as written so far, or the kept entry; None once neither exists."""
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            # Joined just as the download ended: it was adopted into the cache, or dropped.
            cached = self._reopen() if self.error is None else None
            return None if cached is None else cached.handle

    async def follow(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive. Should the cache stop taking them midway (or drop
        them before this reader opened them), the rest comes from upstream and the body goes on
        whole; any other failure of the download is raised."""
        # Until it starts, the temporary file may still be swapped for a cache entry. Shielded:
        # this follower going away must not cancel the start every follower waits for.
        await asyncio.shield(self.started)
        handle = await asyncio.to_thread(self._open_reader)
        position = 0
        try:
            while handle is not None and not (self.done and position >= self.readable):
                if position < self.readable:
                    length = min(CHUNK, self.readable - position)
                    chunk = await asyncio.to_thread(os.pread, handle.fileno(), length, position)
                    if not chunk:
                        raise OSError(f"download of {self.sha256} shorter than written")
                    position += len(chunk)
                    yield chunk
                else:
                    await self._progress.wait()
            if handle is not None and self.error is None:
                return
            if self.error is not None and not isinstance(self.error, CacheUnwritable):
                raise self.error
            async for chunk in self._rest_from_upstream(position, handle):
                yield chunk
        finally:
            if handle is not None:
                await asyncio.to_thread(handle.close)

    async def _rest_from_upstream(
        self, position: int, sent: BinaryIO | None
    ) -> AsyncIterator[bytes]:
        """The bytes after `position` straight from upstream, unkept. The upstream's first
        `position` bytes must be those already sent (read back from `sent`) and the whole must
        hash to the digest, or the body is cut."""
        if position:
            log.info("file %s: unkept after byte %d, the rest from upstream", self.sha256, position)
        async with self._opener() as stream:
            offset = 0  # bytes of this answer seen so far
            async for chunk in verified(stream.chunks, self.sha256):
                start, offset = offset, offset + len(chunk)
                if start < position and sent is not None:
                    seen = chunk[: position - start]
                    before = await asyncio.to_thread(os.pread, sent.fileno(), len(seen), start)
                    if before != seen:
                        raise HashMismatch("the upstream sent other bytes than the first time")
                    chunk = chunk[len(seen) :]
                if chunk:
                    yield chunk

    async def wait(self, progress: Callable[[int], None] | None = None) -> None:
        """Until the file is kept (or not: raises why), without reading it.

        `progress` is called with the number of bytes received since its last call.
        """
        reported = 0
        while True:
            event = self._progress  # taken before the check: a notify in between sets it
            if progress is not None and self.written > reported:
                progress(self.written - reported)
                reported = self.written
            if self.done:
                break
            await event.wait()
        if self.error is not None:
            raise self.error
        if self.unkept is not None:
            raise self.unkept


class FileStore:
    """The verified files. `count_hits`: this process's lookups count in the hit ratio that
    `cache stats` reports (the server's do; the command line tools' do not)."""

    def __init__(self, directory: Path, max_size: int, *, count_hits: bool = True) -> None:
        root = directory / "files"
        self._index = FileIndex(root, max_size)
        self._usage = usage.Usage() if count_hits else None
        self._flushed_at = time.monotonic()
        self._flush_planned = False  # a write of the notes is scheduled or running
        self._upkeep_failing = False
        self._closed = False
        # Background writes (batched uses, room for downloads) wait for SQLite's lock here, in
        # one thread of their own, not in the pool that serves hits.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer")
        self._serving: Counter[str] = Counter()  # entries open for clients: never evicted
        self._serving_lock = threading.Lock()
        # Keeping a file (its partial file renamed in, its row added) and counting the room must
        # not interleave in this process, or a file is counted twice and one too many evicted.
        self._room = threading.RLock()
        # sha256 → (inode, ctime, size) of the entries this process has seen hash right
        self._verified: TTLMemo[str, tuple[int, int, int]] = TTLMemo(_VERIFIED_MEMORY)
        self.evicted = 0  # entries this process evicted
        self._writes = writes_for(directory)
        self._tmp = root / "incoming"  # same file system as the entries: adoption is a rename
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._locks = root / "locks"
        self._locks.mkdir(exist_ok=True)
        # the downloads under way, each with its Download for the followers
        self._downloads: SingleFlight[str, None] = SingleFlight(metrics.FILE_JOIN.inc)
        self._tasks = TaskSet(log, "cache upkeep")

    def close(self) -> None:
        """Write what this process noted (blocking): the server calls it when it stops."""
        self._closed = True
        self._writer.shutdown(wait=True)
        try:
            self._flush_usage()
        except _UPKEEP_ERRORS as exc:
            log.warning("cache usage not written: %s", exc)
        self._index.close()

    @property
    def entries(self) -> diskcache.Cache:
        return self._index.cache

    async def open(self, sha256: str, *, count: bool = True) -> CachedFile | None:
        """A client's lookup of a kept file: counted in the hit ratio, its use noted for
        eviction's order, its bytes checked on the way out (read whole here when small).
        `count=False`: the proxy's own read (metadata, followers), the file as it is."""
        cached = await asyncio.to_thread(self._open, sha256, count)
        if count:
            self._flush_soon()
        return cached

    def read(self, sha256: str) -> CachedFile | None:
        """Open an entry (blocking: for the command line)."""
        return self._open(sha256, count=False)

    def _open(self, sha256: str, count: bool = True) -> CachedFile | None:
        row = self._index.find(sha256)
        cached = None if row is None else self._open_row(sha256, row.filename, row.size, count)
        if count and self._usage is not None:
            if cached is None:
                self._usage.miss()
            else:
                assert row is not None
                self._usage.hit(sha256, row.access_time, time.time())
        return cached

    def _open_row(self, sha256: str, filename: str, size: int, count: bool) -> CachedFile | None:
        try:
            handle = open(self._index.full_path(filename), "rb")  # noqa: SIM115
        except OSError:  # the entry's file vanished: drop the row
            self._drop(sha256, filename)
            return None
        stat = os.fstat(handle.fileno())
        if stat.st_size != size:
            handle.close()
            log.error(
                "cache entry %s has %d bytes, expected %s: dropped", sha256, stat.st_size, size
            )
            self._drop(sha256, filename)
            return None
        cached = CachedFile(sha256, size, stat.st_mtime, handle)
        if not count:
            return cached
        identity = (stat.st_ino, stat.st_ctime_ns, stat.st_size)
        if self._verified.get(sha256) != identity:
            cached.check = Check(
                passed=partial(self._passed, sha256, identity),
                failed=partial(self._corrupt, sha256, filename),
            )
        if size > SERVE_CHUNK:
            with self._serving_lock:
                self._serving[sha256] += 1
            cached.released = partial(self._released, sha256)
            return cached
        try:
            data = read_whole(handle, size)
        finally:
            handle.close()
        cached.handle, cached.data = None, data
        try:
            cached.check_data()
        except CorruptEntry:
            return None  # dropped: the caller fetches it again
        return cached

    def _released(self, sha256: str) -> None:
        with self._serving_lock:
            self._serving[sha256] -= 1
            if self._serving[sha256] <= 0:
                del self._serving[sha256]

    def _passed(self, sha256: str, identity: tuple[int, int, int]) -> None:
        self._verified.set(sha256, identity)

    def _corrupt(self, sha256: str, filename: str, found: str) -> None:
        log.error(
            "cache entry %s is corrupt (its bytes hash to %s): dropped, fetched again when asked",
            sha256,
            found,
        )
        self._verified.pop(sha256, None)
        self._drop(sha256, filename)

    def _drop(self, sha256: str, filename: str) -> None:
        try:
            self._index.drop(sha256, filename)
        except _UPKEEP_ERRORS as exc:
            log.warning("cache entry %s not dropped: %s", sha256, exc)

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._index.cache

    def hits_and_misses(self) -> tuple[int, int]:
        """The counters every process wrote, and this process's not written yet."""
        hits, misses = self._index.counters()
        if self._usage is not None:
            pending_hits, pending_misses = self._usage.counts()
            hits, misses = hits + pending_hits, misses + pending_misses
        return hits, misses

    def add(self, sha256: str, source: BinaryIO) -> int:
        """Copy `source` into the cache if its bytes hash to `sha256` (blocking: for the CLI).

        Returns its size, kept unless it is larger than max_size (or evicted meanwhile: look);
        raises HashMismatch (and keeps nothing) when it does not hash right.
        """
        lock = os.open(self._locks / sha256, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # a download of it elsewhere; and orphan clean-up
        fd, path = tempfile.mkstemp(dir=self._tmp, prefix=sha256[:16], suffix=".part")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as handle:
                while chunk := source.read(CHUNK * 4):
                    _write(handle, digest, chunk)
                    size += len(chunk)
                _flush(handle)
            if digest.hexdigest() != sha256:
                raise HashMismatch(f"content hashes to {digest.hexdigest()}")
            self._keep(sha256, path, size)
            return size
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._unlock(sha256, lock)

    def verify(self) -> tuple[int, list[str]]:
        """Rehash every entry (blocking: for the CLI); drop corrupt ones. (checked, dropped)."""
        checked, dropped = 0, []
        for sha256 in list(self.entries.iterkeys()):
            cached = self._open(sha256, count=False)
            if cached is None or cached.handle is None:
                dropped.append(sha256)  # missing or of the wrong size: _open dropped it
                continue
            with cached.handle:
                digest = hashlib.sha256()
                while chunk := cached.handle.read(CHUNK * 4):
                    digest.update(chunk)
            checked += 1
            if digest.hexdigest() != sha256:
                self.entries.delete(sha256)
                dropped.append(sha256)
        return checked, dropped

    def clean_orphans(self) -> Orphans:
        """Remove what downloads killed midway left (blocking: for start-up); files of
        downloads still running, by a prefetch say, stay."""
        return remove_orphans(self._tmp, self._locks)

    # --- room -------------------------------------------------------------------------------

    def _keep(self, sha256: str, path: str, size: int) -> None:
        """Move a verified file in and make room for it (blocking)."""
        if size > self._index.max_size:
            log.warning(
                "file %s (%d bytes) is larger than cache.max_size (%d bytes): served, not kept",
                sha256,
                size,
                self._index.max_size,
            )
            return
        with self._room:
            self._index.store(sha256, path, size)
            self._make_room(keep=sha256)

    def _make_room(self, keep: str | None = None) -> None:
        """Evict just enough for the entries, the partial downloads on disk and the bytes this
        process's downloads have still to write to fit in max_size (blocking)."""
        with self._room:
            self._flush_usage()  # this process's latest uses count in the order
            self._evict_past_max_size(keep)

    def _evict_past_max_size(self, keep: str | None) -> None:
        with self._serving_lock:
            protected = {*self._serving, *([keep] if keep else [])}
        # What running downloads have still to take beyond their partial files on disk (which
        # partial_bytes counts, preallocated to their whole size where the file system can).
        coming = sum(
            max(0, (d.size or 0) - max(d.written, _on_disk(d.path)))
            for d in self._downloads.handles()
        )
        evicted = self._index.make_room(partial_bytes(self._tmp) + coming, protected)
        if evicted:
            for sha256 in evicted:
                self._verified.pop(sha256, None)
            self.evicted += len(evicted)
            metrics.EVICTIONS.inc(len(evicted))
            log.info("evicted %d least recently used files past cache.max_size", len(evicted))

    def _reserve(self, download: Download) -> None:
        """Make room for a download's announced size as it starts, in the background."""
        if download.size is not None and download.size <= self._index.max_size:
            self._background(self._make_room, download.sha256)

    # --- batched writes ---------------------------------------------------------------------

    def _flush_soon(self) -> None:
        """Write this process's notes within FLUSH_SECONDS of the last write, in the background:
        once per interval however busy, and even if no lookup follows."""
        if self._flush_planned or self._closed:
            return
        self._flush_planned = True
        wait = usage.FLUSH_SECONDS - (time.monotonic() - self._flushed_at)
        asyncio.get_running_loop().call_later(max(0.0, wait), self._start_flush)

    def _start_flush(self) -> None:
        if self._closed:
            return
        self._flushed_at = time.monotonic()
        self._background(self._flush_usage).add_done_callback(self._flushed)

    def _flushed(self, _: object) -> None:
        self._flush_planned = False
        if self._usage is not None and self._usage.waiting():  # noted while it was written
            self._flush_soon()

    def _flush_usage(self) -> None:
        if self._usage is None:
            return
        pending = self._usage.take()
        if not pending:
            return
        try:
            self._index.write_usage(pending)
        except BaseException:
            self._usage.give_back(pending)
            raise

    def _background(self, work: Callable[..., None], *args: Any) -> "asyncio.Future[None]":
        future = asyncio.get_running_loop().run_in_executor(
            self._writer, partial(self._quietly, work, *args)
        )
        self._tasks.spawn(future)
        return future

    def _quietly(self, work: Callable[..., None], *args: Any) -> None:
        """Run background upkeep; a full or read-only disk is logged once, not every time."""
        try:
            work(*args)
        except _UPKEEP_ERRORS as exc:  # the next write tries again
            if not self._upkeep_failing:
                log.warning("cache upkeep (access times, counters, room) failing: %s", exc)
            self._upkeep_failing = True
        else:
            if self._upkeep_failing:
                log.warning("cache upkeep works again")
            self._upkeep_failing = False

    def _adopt(self, download: Download) -> None:
        self._keep(download.sha256, download.path, download.written)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(download.path)  # not kept (larger than max_size): followers have it open
        self._remember_verified(download.sha256)

    def _remember_verified(self, sha256: str) -> None:
        """The download hashed exactly these bytes: the first hit need not hash them again."""
        row = self._index.find(sha256)
        if row is None:
            return
        with contextlib.suppress(OSError):
            stat = os.stat(self._index.full_path(row.filename))
            self._passed(sha256, (stat.st_ino, stat.st_ctime_ns, stat.st_size))

    def download(
        self, sha256: str, opener: Callable[[], AbstractAsyncContextManager[FileStream]]
    ) -> Download:
        """The running download of `sha256`, started with `opener` if there is none."""
        download = self._downloads.handle(sha256)
        if download is None:
            download = Download(sha256, lambda: self._open(sha256, count=False), opener)
        self._downloads.start(sha256, lambda: self._run(download, opener), download)
        return download

    async def _run(
        self, download: Download, opener: Callable[[], AbstractAsyncContextManager[FileStream]]
    ) -> None:
        digest = hashlib.sha256()
        lock: int | None = None
        try:
            lock = await self._lock(download.sha256)
            cached = await self.open(download.sha256, count=False)
            if cached is not None:  # another worker kept it while this one waited
                download.size = download.written = cached.size
                cached.close()
                download.started.set_result(None)
                return
            handle = await self._temporary(download)
            try:
                async with opener() as stream:
                    await self._preallocate(handle, stream.size)
                    download.size = stream.size
                    download.started.set_result(None)
                    self._reserve(download)
                    async for chunk in stream.chunks:
                        await self._disk_write(_write, handle, digest, chunk)
                        download.written += len(chunk)
                        download.notify()
                    await self._disk_write(_flush, handle)
            finally:
                with contextlib.suppress(OSError):  # after the fsync: nothing is left to lose
                    await asyncio.to_thread(handle.close)
            if stream.size is not None and download.written != stream.size:
                raise HashMismatch(f"got {download.written} of {stream.size} bytes")
            if digest.hexdigest() != download.sha256:
                raise HashMismatch(f"content hashes to {digest.hexdigest()}")
            try:
                await asyncio.to_thread(self._adopt, download)
            except WRITE_ERRORS as exc:
                # Whole and verified: the followers finish from the file they hold open.
                download.unkept = self._unwritable(exc)
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, download.path)
        except BaseException as exc:
            download.error = exc
            if not download.started.done():
                download.started.set_exception(exc)
                download.started.exception()  # a caller may never look
            if download.path:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, download.path)
            if isinstance(exc, HashMismatch):
                log.error("file %s not kept: %s", download.sha256, exc)
            elif not isinstance(exc, Exception):
                raise
        finally:
            if lock is not None:
                await asyncio.to_thread(self._unlock, download.sha256, lock)
            download.done = True
            download.notify()

    @property
    def keeping(self) -> bool:
        """False for a while after the cache directory failed a write: serve without keeping."""
        return self._writes.keeping

    def _unwritable(self, exc: BaseException) -> CacheUnwritable:
        self._writes.failed(exc, "keeping a file")
        return CacheUnwritable(str(getattr(exc, "strerror", None) or exc))

    async def _disk_write(self, write: Callable[..., None], *args: Any) -> None:
        try:
            await asyncio.to_thread(write, *args)
        except OSError as exc:
            raise self._unwritable(exc) from None

    async def _preallocate(self, handle: BinaryIO, size: int | None) -> None:
        """Take the file's whole size on disk before its first byte goes to any client: a disk
        too full for it is found while nothing is at stake (the route then streams it unkept)."""
        if not size:
            return
        try:
            await asyncio.to_thread(os.posix_fallocate, handle.fileno(), 0, size)
        except OSError as exc:
            if exc.errno not in _NO_RESERVATION:
                raise self._unwritable(exc) from None

    async def _temporary(self, download: Download) -> BinaryIO:
        """The file the download is written to, on the cache's file system (adoption renames)."""

        def make() -> BinaryIO:
            fd, download.path = tempfile.mkstemp(
                dir=self._tmp, prefix=download.sha256[:16], suffix=".part"
            )
            # Unbuffered: `written` must only count bytes that followers can already read.
            return os.fdopen(fd, "wb", buffering=0)

        try:
            return await asyncio.to_thread(make)
        except OSError as exc:
            raise self._unwritable(exc) from None

    async def _lock(self, sha256: str) -> int:
        """An exclusive flock on this digest's lock file, waiting while another worker holds it."""
        try:
            fd = await asyncio.to_thread(
                os.open, self._locks / sha256, os.O_CREAT | os.O_RDWR, 0o644
            )
        except OSError as exc:
            raise self._unwritable(exc) from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # never blocks the loop
                    return fd
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL)
        except BaseException:
            os.close(fd)
            raise

    def _unlock(self, sha256: str, fd: int) -> None:
        # Unlinked while held: a worker still waiting on the old file finds the entry once it
        # gets the lock, because every holder looks in the cache before downloading.
        with contextlib.suppress(OSError):
            os.unlink(self._locks / sha256)
        os.close(fd)


def _on_disk(path: str) -> int:
    try:
        return os.stat(path).st_size if path else 0
    except FileNotFoundError:
        return 0


def _write(handle: BinaryIO, digest: "hashlib._Hash", chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:  # an unbuffered write may take fewer bytes than it is given
        view = view[handle.write(view) :]
    digest.update(chunk)


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


async def verified(chunks: AsyncIterator[bytes], sha256: str) -> AsyncIterator[bytes]:
    """`chunks` passed through unkept, the last one held back until the whole hashes to `sha256`:
    on a mismatch the client never receives a complete wrong file."""
    digest = hashlib.sha256()
    held: bytes | None = None
    async for chunk in chunks:
        await asyncio.to_thread(digest.update, chunk)
        if held is not None:
            yield held
        held = chunk
    if digest.hexdigest() != sha256:
        raise HashMismatch(f"content hashes to {digest.hexdigest()}")
    if held is not None:
        yield held
