"""Distribution file cache: content-addressed, verified before it is kept, single-flight.

A download runs once per file, as a task of its own, writing to a temporary file while hashing
it; worker processes sharing the directory take an flock per digest, so it runs once per machine.
Every client (the first included) follows that file as it grows, so latecomers get the whole body
and a client hanging up does not stop the download. The last bytes are held back until the sha256
is checked: on a mismatch no client ever receives a complete wrong file, and nothing is kept. A
verified file is moved (not copied) into diskcache, which evicts least recently used entries past
`max_size`; an open reader keeps its file alive after eviction (POSIX unlink).
All disk I/O and hashing happen in worker threads, never on the event loop.

A cache directory that cannot be written (disk full, read-only) degrades instead of failing: for
a minute at a time, files are streamed from upstream verified (`verified`) but not kept.
"""

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import diskcache
from diskcache.core import MODE_BINARY, UNKNOWN

from proxy import metrics
from proxy.sources.base import FileStream

log = logging.getLogger("proxy.cache.files")

CHUNK = 256 * 1024
_LOCK_POLL = 0.05  # seconds between tries for another worker's download lock
_DEGRADED_SECONDS = 60  # after a failed write, how long files are served without keeping


class HashMismatch(Exception):
    """The upstream's bytes do not hash to the digest the file is addressed by."""


class CacheUnwritable(Exception):
    """The cache directory cannot take a new file now; serve it without keeping it."""


@dataclass(frozen=True)
class _Adopt:
    """A verified temporary file to move into the cache as an entry's value."""

    path: str


class _AdoptingDisk(diskcache.Disk):
    """diskcache's Disk, taught to take ownership of a file by rename instead of copying it."""

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, Any, Any]:
        if isinstance(value, _Adopt):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            return os.path.getsize(full_path), MODE_BINARY, filename, None
        return super().store(value, read, key)


@dataclass
class CachedFile:
    """An open cache entry: reading it is safe even if it is evicted meanwhile."""

    handle: BinaryIO
    size: int
    mtime: float

    def close(self) -> None:
        self.handle.close()


class Download:
    """One upstream download, followed by any number of readers."""

    def __init__(self, sha256: str, reopen: Callable[[], "CachedFile | None"]) -> None:
        self.sha256, self._reopen = sha256, reopen
        self.path = ""  # the temporary file, made once the download is sure to run
        self.size: int | None = None  # as announced by the upstream
        self.written = 0
        self.done = False
        self.error: BaseException | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Event()

    def notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    @property
    def readable(self) -> int:
        # Hold back the last byte until the digest is checked: a wrong file never arrives whole.
        return self.written if self.done and self.error is None else max(0, self.written - 1)

    def _open_reader(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            # Joined just as the download ended: it was either adopted into the cache or dropped.
            cached = self._reopen() if self.error is None else None
            if cached is None:
                raise self.error or HashMismatch("download vanished") from None
            return cached.handle

    async def follow(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; raises the download's error if it fails."""
        # Until it starts, the temporary file may still be swapped for a cache entry. Shielded:
        # this follower going away must not cancel the start every follower waits for.
        await asyncio.shield(self.started)
        handle = await asyncio.to_thread(self._open_reader)
        try:
            position = 0
            while True:
                if position < self.readable:
                    length = min(CHUNK, self.readable - position)
                    chunk = await asyncio.to_thread(os.pread, handle.fileno(), length, position)
                    if not chunk:
                        raise OSError(f"download of {self.sha256} shorter than written")
                    position += len(chunk)
                    yield chunk
                elif self.done:
                    if self.error is not None:
                        raise self.error
                    return
                else:
                    await self._progress.wait()
        finally:
            await asyncio.to_thread(handle.close)

    async def wait(self, progress: Callable[[int], None] | None = None) -> None:
        """Until the file is kept (or the download fails: raises its error), without reading it.

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


class FileStore:
    """The verified files. `count_hits`: this process's lookups count in the hit ratio that
    `cache stats` reports (the server's do; the command line tools' do not)."""

    def __init__(self, directory: Path, max_size: int, *, count_hits: bool = True) -> None:
        root = directory / "files"
        self._disk = diskcache.Cache(
            str(root),
            size_limit=max_size,
            eviction_policy="least-recently-used",
            disk=_AdoptingDisk,
            disk_min_file_size=0,
        )
        # diskcache keeps the hit and miss counters in its database, shared by every process.
        if count_hits:
            self._disk.stats(enable=True)
        else:
            self._disk.reset("statistics", 0, update=False)  # this instance only
        # The proxy's own reads (metadata extraction, the re-check after a lock) are no lookups.
        self._uncounted = diskcache.Cache(str(root), disk=_AdoptingDisk, disk_min_file_size=0)
        self._uncounted.reset("statistics", 0, update=False)
        self._tmp = root / "incoming"  # same file system as the entries: adoption is a rename
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._locks = root / "locks"
        self._locks.mkdir(exist_ok=True)
        self._downloads: dict[str, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._degraded_until = 0.0

    def close(self) -> None:
        self._disk.close()
        self._uncounted.close()

    @property
    def entries(self) -> diskcache.Cache:
        return self._disk

    async def open(self, sha256: str, *, count: bool = True) -> CachedFile | None:
        """The kept file; `count=False` for the proxy's own reads, left out of the hit ratio."""
        return await asyncio.to_thread(self._open, sha256, count)

    def read(self, sha256: str) -> CachedFile | None:
        """Open an entry (blocking: for the command line)."""
        return self._open(sha256, count=False)

    def _open(self, sha256: str, count: bool = True) -> CachedFile | None:
        try:
            disk = self._disk if count else self._uncounted
            handle, size = disk.get(sha256, read=True, tag=True)
        except OSError:  # the entry's file vanished: drop the row
            self._disk.delete(sha256)
            return None
        if handle is None:
            return None
        stat = os.fstat(handle.fileno())
        if stat.st_size != size:
            handle.close()
            log.error(
                "cache entry %s has %d bytes, expected %s: dropped", sha256, stat.st_size, size
            )
            self._disk.delete(sha256)
            return None
        return CachedFile(handle=handle, size=size, mtime=stat.st_mtime)

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._disk

    def hits_and_misses(self) -> tuple[int, int]:
        """The counters as stored, read without touching the shared `statistics` setting."""
        return int(self._disk.reset("hits")), int(self._disk.reset("misses"))

    def add(self, sha256: str, source: BinaryIO) -> int:
        """Copy `source` into the cache if its bytes hash to `sha256` (blocking: for the CLI).

        Returns the size kept; raises HashMismatch (and keeps nothing) otherwise.
        """
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
            self._disk.set(sha256, _Adopt(path), read=True, tag=size)
            return size
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def verify(self) -> tuple[int, list[str]]:
        """Rehash every entry (blocking: for the CLI); drop corrupt ones. (checked, dropped)."""
        checked, dropped = 0, []
        for sha256 in list(self._disk.iterkeys()):
            cached = self._open(sha256, count=False)
            if cached is None:
                dropped.append(sha256)  # missing or of the wrong size: _open dropped it
                continue
            with cached.handle:
                digest = hashlib.sha256()
                while chunk := cached.handle.read(CHUNK * 4):
                    digest.update(chunk)
            checked += 1
            if digest.hexdigest() != sha256:
                self._disk.delete(sha256)
                dropped.append(sha256)
        return checked, dropped

    def _adopt(self, download: Download) -> None:
        before = len(self._disk) - (download.sha256 in self._disk)  # another worker's copy
        self._disk.set(download.sha256, _Adopt(download.path), read=True, tag=download.written)
        # diskcache evicts inside set(); the count tells how many entries it let go
        evicted = before + 1 - len(self._disk)
        if evicted > 0:
            metrics.EVICTIONS.inc(evicted)

    def download(
        self, sha256: str, opener: Callable[[], AbstractAsyncContextManager[FileStream]]
    ) -> Download:
        """The running download of `sha256`, started with `opener` if there is none."""
        current = self._downloads.get(sha256)
        if current is not None:
            metrics.FILE_JOIN.inc()
            return current
        download = Download(sha256, lambda: self._open(sha256, count=False))
        self._downloads[sha256] = download
        task = asyncio.ensure_future(self._run(download, opener))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
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
                    download.size = stream.size
                    download.started.set_result(None)
                    async for chunk in stream.chunks:
                        try:
                            await asyncio.to_thread(_write, handle, digest, chunk)
                        except OSError as exc:
                            raise self._unwritable(exc) from None
                        download.written += len(chunk)
                        download.notify()
                    await asyncio.to_thread(_flush, handle)
            finally:
                await asyncio.to_thread(handle.close)
            if stream.size is not None and download.written != stream.size:
                raise HashMismatch(f"got {download.written} of {stream.size} bytes")
            if digest.hexdigest() != download.sha256:
                raise HashMismatch(f"content hashes to {digest.hexdigest()}")
            await asyncio.to_thread(self._adopt, download)
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
            self._downloads.pop(download.sha256, None)
            download.notify()

    @property
    def keeping(self) -> bool:
        """False for a while after the cache directory failed a write: serve without keeping."""
        return time.monotonic() >= self._degraded_until

    def _unwritable(self, exc: OSError) -> CacheUnwritable:
        self._degraded_until = time.monotonic() + _DEGRADED_SECONDS
        log.warning(
            "cache directory cannot be written (%s): serving files without keeping them for %ds",
            exc.strerror or exc,
            _DEGRADED_SECONDS,
        )
        return CacheUnwritable(str(exc.strerror or exc))

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
