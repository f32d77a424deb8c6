"""Index page cache: fresh for a TTL, revalidated after, served stale when upstream is down.

Entries live in diskcache (SQLite + files), so they survive restarts and are shared by worker
processes. Every disk call runs in a thread; concurrent misses for one key share one fetch.

A "not here" answer (a None value) is kept for its own `negative_ttl`, so that names no source has
(public dependencies, asked of every GitLab source) cost one request per source per negative TTL.

Above it sits a per-process memo of finished answers (rendered pages), valid while every entry
behind them is fresh and no worker has invalidated anything since: an invalidation stamps the
`generation` file's mtime, which every worker compares with one stat() per request.

When the cache directory cannot be written (disk full, read-only), stored entries are still
read, and what the disk would not take is held in this process instead (bounded): loaded pages,
file locations, and invalidations, so that an upload shows at once on the worker that took it
(other workers see it once their copy is older than the TTL).
"""

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache

from proxy import metrics
from proxy.aio import SingleFlight, TTLMemo
from proxy.errors import Offline, SourceUnavailable
from proxy.model import DistFile
from proxy.storage import pickles
from proxy.storage.writable import WRITE_ERRORS, writes_for

log = logging.getLogger("proxy.cache.pages")

_PAGES_SIZE_LIMIT = 2**30
_MEMO_ENTRIES = 10_000
_UNKEPT_ENTRIES = 10_000
_FORGOTTEN = object()  # the value of an entry invalidated while the disk could not drop it
_REMEMBER_AT_ONCE = 200  # file locations written per transaction


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Result:
    value: Any
    stale: bool  # the upstream could not be reached (or the proxy is offline) and the TTL passed
    fresh_until: float = 0.0  # until when the value may be reused without asking again


class PageCache:
    def __init__(
        self,
        directory: Path,
        ttl: float,
        *,
        offline: bool = False,
        negative_ttl: float | None = None,
    ) -> None:
        self.ttl, self.offline = ttl, offline
        self.negative_ttl = ttl if negative_ttl is None else negative_ttl
        self._disk = diskcache.Cache(
            str(directory / "pages"),
            size_limit=_PAGES_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
            disk=pickles.Disk,
        )
        self._flights: SingleFlight[Hashable, tuple[Any, float]] = SingleFlight(
            metrics.PAGE_JOIN.inc
        )
        self._generation_path = directory / "pages" / "generation"
        # rendered pages: (generation, value) until their inputs expire (wall-clock times)
        self._memo: TTLMemo[Hashable, tuple[int, Any]] = TTLMemo(_MEMO_ENTRIES, clock=time.time)
        self._writes = writes_for(directory)
        # What the disk would not take, newest last; touched on the event loop only.
        self._unkept: TTLMemo[Hashable, Entry] = TTLMemo(_UNKEPT_ENTRIES)

    def generation(self) -> int:
        """Changes whenever any worker invalidates an entry."""
        try:
            return os.stat(self._generation_path).st_mtime_ns
        except FileNotFoundError:
            return 0

    def memo_get(self, key: Hashable, generation: int) -> Any | None:
        hit = self._memo.get(key)
        if hit is None or hit[0] != generation:
            return None
        return hit[1]

    def memo_put(self, key: Hashable, value: Any, fresh_until: float, generation: int) -> None:
        """Keep `value` while fresh; `generation` is the one read before its inputs were."""
        if fresh_until > time.time():
            self._memo.set(key, (generation, value), until=fresh_until)

    def close(self) -> None:
        self._disk.close()

    def __len__(self) -> int:
        return len(self._disk)

    async def peek(self, key: Hashable) -> Entry | None:
        stored = await asyncio.to_thread(self._disk.get, key)
        held = self._unkept.get(key)
        if held is None or (stored is not None and stored.fetched_at > held.fetched_at):
            return stored
        return None if held.value is _FORGOTTEN else held

    def _hold(self, key: Hashable, entry: Entry) -> None:
        """Keep `entry` in this process: the disk would not take it."""
        self._unkept.set(key, entry)

    async def invalidate(self, *keys: Hashable) -> None:
        """Forget entries, in this worker and every other one sharing the directory."""
        try:
            await asyncio.to_thread(self._invalidate, keys)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "forgetting index pages")
            now = time.time()
            for key in keys:
                self._hold(key, Entry(_FORGOTTEN, now))
            self._memo.clear()

    def _invalidate(self, keys: tuple[Hashable, ...]) -> None:
        for key in keys:
            self._disk.delete(key)
        self._generation_path.touch()
        stamp = time.time_ns()
        os.utime(self._generation_path, ns=(stamp, stamp))
        self._memo.clear()

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Every stored (key, value) (blocking: for the command line)."""
        for key in list(self._disk.iterkeys()):
            value = self._disk.get(key)
            if value is not None:
                yield key, value

    def keep(self, key: Hashable, entry: Entry) -> bool:
        """Store `entry` unless a newer one is stored (blocking: for the command line).

        Call `announce()` after the last one, so running workers drop their memos.
        """
        with self._disk.transact():
            current = self._disk.get(key)
            if isinstance(current, Entry) and current.fetched_at >= entry.fetched_at:
                return False
            self._disk.set(key, entry)
            return True

    def keep_files(self, files: Iterable[DistFile]) -> None:
        """`remember_files` for the command line (blocking)."""
        self._remember_files(list(files))

    def announce(self) -> None:
        """Tell every worker sharing the directory that entries changed."""
        self._invalidate(())

    async def remember_files(self, files: Iterable[DistFile]) -> None:
        """Record which source offers each file, so its URL works without the page."""
        files = list(files)
        try:
            await asyncio.to_thread(self._remember_files, files)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "keeping file locations")
            now = time.time()
            for file in files:
                key = ("file", file.sha256)
                held = self._unkept.get(key)
                self._hold(key, Entry({**(held.value if held else {}), file.source: file}, now))

    def _remember_files(self, files: list[DistFile]) -> None:
        # short transactions: a page of 10,000 files must not hold up every other write
        for start in range(0, len(files), _REMEMBER_AT_ONCE):
            with self._disk.transact():
                for file in files[start : start + _REMEMBER_AT_ONCE]:
                    key = ("file", file.sha256)
                    known: dict[str, DistFile] = self._disk.get(key) or {}
                    if known.get(file.source) != file:
                        self._disk.set(key, {**known, file.source: file})

    async def file_locations(self, sha256: str) -> list[DistFile]:
        known = await asyncio.to_thread(self._disk.get, ("file", sha256))
        held = self._unkept.get(("file", sha256))
        return list({**(known or {}), **(held.value if held else {})}.values())

    async def fetch(self, key: Hashable, loader: Callable[[], Awaitable[Any]]) -> Result:
        """The value for `key`: cached while fresh, else loaded; stale only if loading fails.

        Raises Offline when offline with nothing cached, SourceUnavailable when the upstream
        fails and nothing is cached.
        """
        entry = await self.peek(key)
        if entry is not None and self.offline:
            (metrics.PAGE_STALE if self._expired(entry) else metrics.PAGE_HIT).inc()
            return Result(entry.value, stale=self._expired(entry), fresh_until=math.inf)
        if entry is not None and not self._expired(entry):
            metrics.PAGE_HIT.inc()
            return Result(
                entry.value, stale=False, fresh_until=entry.fetched_at + self._ttl(entry.value)
            )
        if self.offline:
            raise Offline("the proxy is offline and has no cached copy")
        try:
            value, fetched_at = await self._load_once(key, loader)
        except SourceUnavailable as exc:
            if entry is None:
                raise
            log.warning("serving stale %s: %s", key, exc)
            metrics.PAGE_STALE.inc()
            return Result(entry.value, stale=True)
        metrics.PAGE_MISS.inc()
        return Result(value, stale=False, fresh_until=fetched_at + self._ttl(value))

    def _ttl(self, value: Any) -> float:
        return self.negative_ttl if value is None else self.ttl

    def _expired(self, entry: Entry) -> bool:
        return time.time() - entry.fetched_at >= self._ttl(entry.value)

    async def _load_once(self, key: Hashable, loader: Callable[[], Awaitable[Any]]) -> Any:
        return await self._flights.run(key, lambda: self._load_and_store(key, loader))

    async def _load_and_store(
        self, key: Hashable, loader: Callable[[], Awaitable[Any]]
    ) -> tuple[Any, float]:
        value = await loader()
        entry = Entry(value, time.time())
        try:
            await asyncio.to_thread(self._disk.set, key, entry)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "keeping an index page")
            self._hold(key, entry)
        else:
            self._unkept.pop(key, None)
        return value, entry.fetched_at
