"""The file cache's index: which files are kept, how big, how recently used; and eviction.

A SQLite database of the proxy's own, `files/index.db`: a row per file (sha256, its name under
`files/`, size, store and access times), totals kept by triggers (files, bytes, hits, misses) and
an index on access times. A verified file is moved in as `files/sha256/<2 hex digits>/<sha256>`.
The processes sharing the directory share it as gitlab_pypi_proxy.storage.sqlite_db says. A lookup
is one indexed SELECT; access times and counters arrive in batches (storage/usage.py); eviction
frees just enough, least recently used first, never an entry it is told to keep.
When the index is made it adopts what is on disk: an earlier version's diskcache index, read
through diskcache's public API (its files stay where they are, aged by their store time), and
any file under `sha256/` no row lists, trusted by name (only verified files are moved there, and
a hit checks the bytes again). Every method blocks: call them from a thread.
"""

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from gitlab_pypi_proxy.names import is_sha256
from gitlab_pypi_proxy.storage.sqlite_db import Database
from gitlab_pypi_proxy.storage.usage import Pending

log = logging.getLogger("proxy.cache.files")

INDEX = "index.db"
BLOBS = "sha256"
_FORMAT = 1  # the tables below; a database without it is (re)made, adopting what is on disk
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
        sha256 TEXT PRIMARY KEY NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL,
        store_time REAL NOT NULL,
        access_time REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS files_access_time ON files (access_time)",
    "CREATE INDEX IF NOT EXISTS files_store_time ON files (store_time)",
    """CREATE TABLE IF NOT EXISTS totals (
        name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "INSERT OR IGNORE INTO totals VALUES ('files', 0), ('bytes', 0), ('hits', 0), ('misses', 0)",
    """CREATE TRIGGER IF NOT EXISTS files_added AFTER INSERT ON files BEGIN
        UPDATE totals SET value = value + 1 WHERE name = 'files';
        UPDATE totals SET value = value + NEW.size WHERE name = 'bytes';
    END""",
    """CREATE TRIGGER IF NOT EXISTS files_removed AFTER DELETE ON files BEGIN
        UPDATE totals SET value = value - 1 WHERE name = 'files';
        UPDATE totals SET value = value - OLD.size WHERE name = 'bytes';
    END""",
    """CREATE TRIGGER IF NOT EXISTS files_resized AFTER UPDATE OF size ON files BEGIN
        UPDATE totals SET value = value + NEW.size - OLD.size WHERE name = 'bytes';
    END""",
)


Sql = Callable[..., sqlite3.Cursor]  # a connection's `execute`


@dataclass(frozen=True)
class Row:
    filename: str  # relative to the files directory
    size: int
    access_time: float


class FileIndex:
    def __init__(self, root: Path, max_size: int) -> None:
        self.root, self.max_size = root, max_size
        root.mkdir(parents=True, exist_ok=True)
        self._db = Database(root / INDEX)
        self._made()

    def close(self) -> None:
        self._db.close()

    # --- reads --------------------------------------------------------------------------------

    def find(self, sha256: str) -> Row | None:
        rows = self._sql(
            "SELECT filename, size, access_time FROM files WHERE sha256 = ?", (sha256,)
        ).fetchall()
        return Row(*rows[0]) if rows else None

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and self.find(sha256) is not None

    def digests(self) -> list[str]:
        """Every entry's sha256, in order."""
        rows = self._sql("SELECT sha256 FROM files ORDER BY sha256").fetchall()
        return [sha256 for (sha256,) in rows]

    def full_path(self, filename: str) -> str:
        return os.path.join(self.root, filename)

    def totals(self) -> tuple[int, int, float | None, float | None]:
        """(entries, bytes, when the oldest was stored, when the newest was)."""
        ((oldest, newest),) = self._sql(
            "SELECT MIN(store_time), MAX(store_time) FROM files"
        ).fetchall()
        totals = self._totals()
        return totals["files"], totals["bytes"], oldest, newest

    def rows(self) -> list[tuple[str, int, float]]:
        """(sha256, size, access time) of every entry."""
        return self._sql("SELECT sha256, size, access_time FROM files").fetchall()

    def counters(self) -> tuple[int, int]:
        """(hits, misses) as written by every process so far."""
        totals = self._totals()
        return totals["hits"], totals["misses"]

    # --- writes -------------------------------------------------------------------------------

    def store(self, sha256: str, path: str, size: int) -> None:
        """Move the verified file at `path` in as the entry for `sha256` (replacing one)."""
        filename = os.path.join(BLOBS, sha256[:2], sha256)
        placed = self.full_path(filename)
        os.makedirs(os.path.dirname(placed), exist_ok=True)
        os.rename(path, placed)
        now = time.time()
        try:
            with self._writing() as sql:
                replaced = sql("SELECT filename FROM files WHERE sha256 = ?", (sha256,)).fetchall()
                sql(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE SET"
                    " filename = excluded.filename, size = excluded.size,"
                    " store_time = excluded.store_time, access_time = excluded.access_time",
                    (sha256, filename, size, now, now),
                )
        except BaseException:  # moved, but no row records it: it would stay forever unseen
            with contextlib.suppress(OSError):
                os.unlink(placed)
            raise
        if replaced and replaced[0][0] != filename:  # an earlier version's copy
            self._remove(replaced[0][0])

    def drop(self, sha256: str, filename: str) -> None:
        """Delete the entry and its file, if it still is `filename`."""
        with self._writing() as sql:
            deleted = sql(
                "DELETE FROM files WHERE sha256 = ? AND filename = ?", (sha256, filename)
            ).rowcount
        if deleted:
            self._remove(filename)

    def delete(self, sha256: str) -> None:
        """Delete the entry and its file, whichever it is."""
        with self._writing() as sql:
            rows = sql("SELECT filename FROM files WHERE sha256 = ?", (sha256,)).fetchall()
            sql("DELETE FROM files WHERE sha256 = ?", (sha256,))
        for (filename,) in rows:
            self._remove(filename)

    def write_usage(self, pending: Pending) -> None:
        """One transaction: the counters and the access stamps a process noted."""
        with self._writing() as sql:
            for name, count in (("hits", pending.hits), ("misses", pending.misses)):
                if count:
                    sql("UPDATE totals SET value = value + ? WHERE name = ?", (count, name))
            for sha256, when in pending.stamps.items():
                sql(
                    "UPDATE files SET access_time = ? WHERE sha256 = ? AND access_time < ?",
                    (when, sha256, when),
                )

    def make_room(self, outside: int, keep: Collection[str]) -> list[str]:
        """Evict the least recently used entries, none of `keep`, until the entries and
        `outside` more bytes fit in max_size. Returns the sha256 of each entry evicted.

        Walks the access-time index from its oldest end and stops as soon as enough is free.
        """
        victims: list[tuple[str, str]] = []
        with self._writing() as sql:
            ((volume,),) = sql("SELECT value FROM totals WHERE name = 'bytes'").fetchall()
            over = volume + outside - self.max_size
            if over <= 0:
                return []
            cursor = sql("SELECT sha256, size, filename FROM files ORDER BY access_time")
            try:
                for sha256, size, filename in cursor:
                    if sha256 in keep:
                        continue
                    victims.append((sha256, filename))
                    over -= size
                    if over <= 0:
                        break
            finally:
                cursor.close()
            for sha256, _ in victims:
                sql("DELETE FROM files WHERE sha256 = ?", (sha256,))
        for _, filename in victims:  # after the commit: a rollback must not lose files
            self._remove(filename)
        return [sha256 for sha256, _ in victims]

    # --- the database -------------------------------------------------------------------------

    def _sql(self, statement: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        return self._db.sql(statement, parameters)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Sql]:
        """A write transaction, holding the database's write lock from its start."""
        with self._db.writing() as connection:
            yield connection.execute

    def _totals(self) -> dict[str, int]:
        return dict(self._sql("SELECT name, value FROM totals").fetchall())

    def _remove(self, filename: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.full_path(filename))

    def _made(self) -> None:
        """The tables, made once for the directory (adopting what is on disk) by whichever
        process gets there first; the others wait for it, then find them made."""
        adopted = 0

        def make(connection: sqlite3.Connection) -> None:
            nonlocal adopted
            for statement in _SCHEMA:
                connection.execute(statement)
            adopted = _adopt(self.root, connection.execute)

        if self._db.made(_FORMAT, make) and adopted:
            log.info("file cache index made: %d files already in the cache adopted", adopted)


def _adopt(root: Path, sql: Sql) -> int:
    """Rows for the files already in the cache: an earlier version's (diskcache's index), then
    those stored by name that no row lists. Returns how many."""
    rows: dict[str, tuple[str, int, float]] = {}
    hits = misses = 0
    if (root / "cache.db").exists():
        hits, misses = _read_diskcache(root, rows)
    blobs = root / BLOBS
    if blobs.is_dir():
        for path in blobs.glob("??/*"):
            sha256 = path.name
            if is_sha256(sha256) and path.parent.name == sha256[:2]:
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    filename = os.path.join(BLOBS, sha256[:2], sha256)
                    rows[sha256] = (filename, stat.st_size, stat.st_mtime)
    for sha256, (filename, size, stored) in rows.items():
        sql(
            "INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?, ?)",
            (sha256, filename, size, stored, stored),
        )
    sql("UPDATE totals SET value = value + ? WHERE name = 'hits'", (hits,))
    sql("UPDATE totals SET value = value + ? WHERE name = 'misses'", (misses,))
    return len(rows)


def _read_diskcache(root: Path, rows: dict[str, tuple[str, int, float]]) -> tuple[int, int]:
    """The entries and counters of the diskcache index earlier versions kept in `root`, read
    through its public API (its own database is left as it was). Returns (hits, misses)."""
    import io

    import diskcache

    cache = diskcache.Cache(str(root), eviction_policy="none", statistics=0, cull_limit=0)
    try:
        hits, misses = cache.stats(enable=False)
        for key in cache.iterkeys():
            if not (isinstance(key, str) and is_sha256(key)):
                continue
            value, _ = cache.get(key, read=True, tag=True)
            if not isinstance(value, io.BufferedReader):
                continue  # its file is gone
            with value:
                stat = os.fstat(value.fileno())
                filename = os.path.relpath(value.name, root)
            rows[key] = (filename, stat.st_size, stat.st_mtime)
    finally:
        cache.close()
    return int(hits), int(misses)
