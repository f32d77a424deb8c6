"""The blob store on local disk (gitlab_pypi_proxy.storage.blobs): the verified files under
`<cache>/files`, their SQLite index (gitlab_pypi_proxy.storage.file_index), eviction.

A verified spool is moved into the cache. `max_size` bounds the kept files plus the downloads
arriving: when a download reserves its size and when a file is kept, just enough of the least
recently used entries are evicted, never the file being kept nor one this process serves. A file
larger than `max_size` is served, not kept. A hit writes nothing: uses and counters are written
in batches (gitlab_pypi_proxy.storage.usage), and its bytes are checked on the way out
(gitlab_pypi_proxy.storage.cached_file). A cache directory that cannot be written degrades
(gitlab_pypi_proxy.storage.writable): kept files are served, `keeping` turns false a while and
new files stream verified, unkept. Methods that touch the disk block unless async."""

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import TaskSet, TTLMemo
from gitlab_pypi_proxy.storage import usage
from gitlab_pypi_proxy.storage.blobs import BlobEntry, BlobStats, CacheUnwritable, Spool
from gitlab_pypi_proxy.storage.cached_file import (
    SERVE_CHUNK,
    CachedFile,
    Check,
    CorruptEntry,
    read_whole,
)
from gitlab_pypi_proxy.storage.file_index import FileIndex
from gitlab_pypi_proxy.storage.leftovers import (
    discard_spool,
    new_spool,
    partial_bytes,
    remove_orphans,
)
from gitlab_pypi_proxy.storage.writable import writes_for

log = logging.getLogger("proxy.cache.files")

# posix_fallocate cannot reserve space on this file system: write without a reservation
_NO_RESERVATION = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_UPKEEP_ERRORS = (sqlite3.Error, OSError)
_VERIFIED_MEMORY = 16_384  # files remembered as checked (~300 bytes each); past it, checked again


class LocalBlobStore:
    """The blobs under `<directory>/files`. `count_hits`: this process's lookups count in the
    hit ratio that `cache stats` reports (the server's do; the command line tools' do not)."""

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
        self._spools: dict[int, Spool] = {}  # the downloads arriving, for room
        self._spools_lock = threading.Lock()
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
    def keeping(self) -> bool:
        """False for a while after the cache directory failed a write: serve without keeping."""
        return self._writes.keeping

    async def open(self, sha256: str, *, count: bool = True) -> CachedFile | None:
        """A client's lookup of a kept file: counted in the hit ratio, its use noted for
        eviction's order, its bytes checked on the way out (read whole here when small).
        `count=False`: the proxy's own read (metadata, followers), the file as it is."""
        cached = await asyncio.to_thread(self._open, sha256, count)
        if count:
            self._flush_soon()
        return cached

    def open_now(self, sha256: str) -> CachedFile | None:
        return self._open(sha256, count=False)

    async def redirect_url(self, sha256: str) -> None:
        return None  # the cache directory is this machine's: the proxy serves it

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
        cached = CachedFile(sha256, size, stat.st_mtime, handle, path=filename)
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

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._index

    def digests(self) -> Iterator[str]:
        return iter(self._index.digests())

    def entries(self) -> Iterator[BlobEntry]:
        """Last use as the access times written so far (each worker writes its own within
        seconds)."""
        return (BlobEntry(key, size, used) for key, size, used in self._index.rows())

    def delete(self, sha256: str) -> None:
        self._verified.pop(sha256, None)
        self._index.delete(sha256)

    def stats(self) -> BlobStats:
        """The entries and bytes, when they were stored, and the hit and miss counters every
        process wrote, with this process's not written yet."""
        entries, volume, oldest, newest = self._index.totals()
        hits, misses = self._index.counters()
        if self._usage is not None:
            pending_hits, pending_misses = self._usage.counts()
            hits, misses = hits + pending_hits, misses + pending_misses
        return BlobStats(entries, volume, oldest, newest, hits, misses)

    def clean(self) -> tuple[int, int]:
        """Remove the spools of downloads killed midway (blocking: for start-up); those of
        downloads still running, by a prefetch say, stay."""
        return remove_orphans(self._tmp)

    # --- spools -----------------------------------------------------------------------------

    def spool(self, sha256: str) -> Spool:
        """A new spool in `incoming/`, on the entries' file system (putting it is a rename)."""
        spool = new_spool(self._tmp, sha256)
        with self._spools_lock:
            self._spools[id(spool)] = spool
        return spool

    async def reserve(self, spool: Spool, size: int | None) -> None:
        """Take the file's whole size on disk before its first byte goes to any client: a disk
        too full for it is found while nothing is at stake (it is then served unkept). Then, in
        the background, evict what the cache must lose for it."""
        spool.size = size
        if size:
            try:
                await asyncio.to_thread(os.posix_fallocate, spool.handle.fileno(), 0, size)
            except OSError as exc:
                if exc.errno not in _NO_RESERVATION:
                    raise self.failed(exc, "keeping a file") from None
        if size is not None and size <= self._index.max_size:
            self._background(self._make_room, spool.sha256)

    def put(self, spool: Spool) -> bool:
        kept = self._keep(spool.sha256, spool.path, spool.written)
        if kept:
            self._remember_verified(spool.sha256)
        return kept

    def discard(self, spool: Spool) -> None:
        with self._spools_lock:
            self._spools.pop(id(spool), None)
        discard_spool(spool)  # not put, or not kept (larger than max_size)

    def failed(self, exc: BaseException, what: str) -> CacheUnwritable:
        self._writes.failed(exc, what)
        return CacheUnwritable(str(getattr(exc, "strerror", None) or exc))

    # --- room -------------------------------------------------------------------------------

    def _keep(self, sha256: str, path: str, size: int) -> bool:
        """Move a verified file in and make room for it (blocking). False if it is too big."""
        if size > self._index.max_size:
            log.warning(
                "file %s (%d bytes) is larger than cache.max_size (%d bytes): served, not kept",
                sha256,
                size,
                self._index.max_size,
            )
            return False
        with self._room:
            self._index.store(sha256, path, size)
            self._make_room(keep=sha256)
        return True

    def _make_room(self, keep: str | None = None) -> None:
        """Evict just enough for the entries, the partial downloads on disk and the bytes this
        process's downloads have still to write to fit in max_size (blocking)."""
        with self._room:
            self._flush_usage()  # this process's latest uses count in the order
            self._evict_past_max_size(keep)

    def _evict_past_max_size(self, keep: str | None) -> None:
        with self._serving_lock:
            protected = {*self._serving, *([keep] if keep else [])}
        # Running downloads take their whole size (announced, or written so far) whatever is
        # on disk yet; orphans what they take.
        with self._spools_lock:
            claimed = {
                os.path.basename(s.path): max(s.size or 0, s.written) for s in self._spools.values()
            }
        evicted = self._index.make_room(partial_bytes(self._tmp, claimed), protected)
        if evicted:
            for sha256 in evicted:
                self._verified.pop(sha256, None)
            self.evicted += len(evicted)
            metrics.EVICTIONS.inc(len(evicted))
            log.info("evicted %d least recently used files past cache.max_size", len(evicted))

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

    def _remember_verified(self, sha256: str) -> None:
        """The download hashed exactly these bytes: the first hit need not hash them again."""
        row = self._index.find(sha256)
        if row is None:
            return
        with contextlib.suppress(OSError):
            stat = os.stat(self._index.full_path(row.filename))
            self._passed(sha256, (stat.st_ino, stat.st_ctime_ns, stat.st_size))
