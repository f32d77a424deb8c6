"""The file cache's index: which files are kept, how big, how recently used; and eviction.

It is diskcache's SQLite database (`Cache` holds one row per entry: key = sha256, the value file's
name, size, store and access times; `Settings` the totals, kept by triggers, and the hit and miss
counters), so caches written by earlier versions open as they are. diskcache runs with its own
eviction and statistics off, and the queries it has no API for are made here, in one place
(diskcache 5.6, whose schema has not changed since 4.x; pinned below 6):
- its cull deleted up to `cull_limit` (10) least recently used entries on every store past the
  limit, not just enough to get under it: with ten or fewer entries, all of them, the file just
  stored included. `make_room` evicts just enough, least recently used first, skipping the
  entries it is told to keep, and counts bytes kept outside the table (partial downloads);
- its least-recently-used policy and statistics made every lookup a write transaction. `find` is
  one indexed SELECT; access times and counters arrive in batches (gitlab_pypi_proxy.storage.usage).
Every method blocks: call them from a thread.
"""

import contextlib
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, UNKNOWN

from gitlab_pypi_proxy.storage.usage import Pending


@dataclass
class Adopt:
    """A verified temporary file to move into the cache as an entry's value."""

    path: str
    placed: str = ""  # where it was moved to, until the entry is recorded


class _AdoptingDisk(diskcache.Disk):
    """diskcache's Disk, taught to take ownership of a file by rename instead of copying it."""

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, Any, Any]:
        if isinstance(value, Adopt):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            value.placed = full_path
            return os.path.getsize(full_path), MODE_BINARY, filename, None
        return super().store(value, read, key)


@dataclass(frozen=True)
class Row:
    filename: str  # relative to the cache directory
    size: int
    access_time: float


class FileIndex:
    def __init__(self, root: Path, max_size: int) -> None:
        self.max_size = max_size
        self.cache = diskcache.Cache(
            str(root),
            size_limit=max_size,
            eviction_policy="none",  # `get` writes nothing; eviction is `make_room`
            cull_limit=0,  # `set` never culls
            statistics=0,  # `get` counts nothing; counters arrive through `write_usage`
            disk=_AdoptingDisk,
            disk_min_file_size=0,
        )
        # The order eviction walks (the index diskcache made for its LRU policy, kept).
        self.cache._sql_retry("CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)")

    def close(self) -> None:
        self.cache.close()

    def find(self, sha256: str) -> Row | None:
        rows = self.cache._sql(
            "SELECT filename, size, access_time FROM Cache WHERE key = ? AND raw = 1", (sha256,)
        ).fetchall()
        return Row(*rows[0]) if rows else None

    def full_path(self, filename: str) -> str:
        return os.path.join(self.cache.directory, filename)

    def store(self, sha256: str, path: str, size: int) -> None:
        """Move the verified file at `path` in as the entry for `sha256` (replacing one)."""
        adopt = Adopt(path)
        try:
            self.cache.set(sha256, adopt, read=True, tag=size)
        except BaseException:
            if adopt.placed:  # moved, but no row records it: it would stay forever unseen
                with contextlib.suppress(OSError):
                    os.unlink(adopt.placed)
            raise

    def drop(self, sha256: str, filename: str) -> None:
        """Delete the entry and its file, if it still is `filename` (not a newer copy)."""
        sql = self.cache._sql
        with self.cache.transact():
            deleted = sql(
                "DELETE FROM Cache WHERE key = ? AND raw = 1 AND filename = ?",
                (sha256, filename),
            ).rowcount
        if deleted:
            self.cache.disk.remove(filename)

    def totals(self) -> tuple[int, int, float | None, float | None]:
        """(entries, bytes, when the oldest was stored, when the newest was)."""
        ((count, oldest, newest),) = self.cache._sql(
            "SELECT COUNT(*), MIN(store_time), MAX(store_time) FROM Cache"
        ).fetchall()
        return count, self.cache.volume(), oldest, newest

    def rows(self) -> list[tuple[str, int, float]]:
        """(sha256, size, access time) of every entry."""
        return self.cache._sql("SELECT key, size, access_time FROM Cache WHERE raw = 1").fetchall()

    def counters(self) -> tuple[int, int]:
        """(hits, misses) as written by every process so far."""
        rows = dict(
            self.cache._sql(
                "SELECT key, value FROM Settings WHERE key IN ('hits', 'misses')"
            ).fetchall()
        )
        return int(rows.get("hits", 0)), int(rows.get("misses", 0))

    def write_usage(self, pending: Pending) -> None:
        """One transaction: the counters and the access stamps a process noted."""
        sql = self.cache._sql
        with self.cache.transact():
            for key, count in (("hits", pending.hits), ("misses", pending.misses)):
                if count:
                    sql("UPDATE Settings SET value = value + ? WHERE key = ?", (count, key))
            for sha256, when in pending.stamps.items():
                sql(
                    "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1"
                    " AND access_time < ?",
                    (when, sha256, when),
                )

    def make_room(self, outside: int, keep: Collection[str]) -> list[str]:
        """Evict the least recently used entries, none of `keep`, until the entries and
        `outside` more bytes fit in max_size. Returns the sha256 of each entry evicted.

        Walks the access-time index from its oldest end and stops as soon as enough is free.
        """
        sql = self.cache._sql
        victims: list[tuple[int, str, str]] = []
        with self.cache.transact():
            over = self.cache.volume() + outside - self.max_size
            if over <= 0:
                return []
            cursor = sql("SELECT rowid, key, size, filename FROM Cache ORDER BY access_time")
            try:
                for rowid, key, size, filename in cursor:
                    if key in keep:
                        continue
                    victims.append((rowid, key, filename))
                    over -= size
                    if over <= 0:
                        break
            finally:
                cursor.close()
            for rowid, _, _ in victims:
                sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
        for _, _, filename in victims:  # after the commit: a rollback must not lose files
            self.cache.disk.remove(filename)
        return [key for _, key, _ in victims]
