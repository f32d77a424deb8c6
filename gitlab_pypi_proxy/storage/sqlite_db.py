"""A SQLite database of the proxy's own in the cache directory (the file index, where files are
listed), shared by the processes of one machine: WAL, so that readers never wait for a writer;
a connection per thread, given the lean settings of every database the proxy opens
(gitlab_pypi_proxy.storage.disk_caches.lean); each write one transaction that takes the write
lock at once (BEGIN IMMEDIATE: two processes never deadlock upgrading a read). Its tables are
made once per format (`PRAGMA user_version`) by whichever process gets there first. Every method
blocks: call them from a thread."""

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from gitlab_pypi_proxy.storage.disk_caches import lean

_BUSY_SECONDS = 60.0  # how long a write waits for another process's


class _PerThread(threading.local):
    connection: sqlite3.Connection | None = None


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = _PerThread()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = _PerThread()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        connection = self._local.connection
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=_BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA synchronous = NORMAL")  # WAL: consistent after a crash
            lean(connection)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def sql(self, statement: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        return self.connection().execute(statement, parameters)

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, holding the database's write lock from its start."""
        connection = self.connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def format(self) -> int:
        ((version,),) = self.sql("PRAGMA user_version").fetchall()
        return int(version)

    def made(self, version: int, make: Callable[[sqlite3.Connection], None]) -> bool:
        """Make the tables of format `version` with `make` (in WAL mode, in one transaction that
        ends by recording the version) unless they are made; True if this call made them."""
        if self.format() == version:
            return False
        # One process at a time: switching to WAL takes an exclusive lock for which SQLite
        # does not wait (its busy handler is skipped where waiting could deadlock).
        with open(f"{self.path}.making", "a") as making:
            fcntl.flock(making, fcntl.LOCK_EX)
            ((mode,),) = self.sql("PRAGMA journal_mode").fetchall()
            if mode != "wal":  # kept in the database once set
                self.sql("PRAGMA journal_mode = WAL")
            with self.writing() as connection:
                if self.format() == version:
                    return False
                make(connection)
                connection.execute(f"PRAGMA user_version = {int(version)}")
        return True
