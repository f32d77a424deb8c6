"""Every SQLite database the proxy keeps is opened with settings that keep a worker's memory
small: the diskcaches (index records, details, metadata, provenance, uploads) by `open_cache`,
a connection the proxy makes itself (the file index) given them by `lean`.

diskcache's defaults suit one process and one big database: a 64 MiB memory map and 8,192 pages
(32 MiB) of page cache per connection, and a connection per thread that uses it (every thread of
asyncio.to_thread's pool, for every store). In a worker both grow with the databases into
resident memory that is never given back: the map's pages as file-backed memory, the page cache
as heap. The proxy reads its stores a record at a time, by key: the kernel's page cache, which
every worker shares and which costs none of them memory, serves those pages as fast. So each
connection maps nothing and keeps a small cache of its own.

diskcache stores the settings in each database, where they outlast this process (the command
line, and a later opening without them, keep them). One function, so that every store opens the
same way whatever it keeps in its records.
"""

import sqlite3
from pathlib import Path
from typing import Any

import diskcache

# PRAGMA mmap_size and cache_size (in pages, of 4 KiB): per connection
SQLITE_SETTINGS: dict[str, int] = {"sqlite_mmap_size": 0, "sqlite_cache_size": 16}


def open_cache(directory: Path | str, **settings: Any) -> diskcache.Cache:
    """The diskcache in `directory` (created if need be), with diskcache `settings` (a `disk`,
    an eviction policy, a size limit) over the memory-lean SQLite ones."""
    return diskcache.Cache(str(directory), **{**SQLITE_SETTINGS, **settings})


def lean(connection: sqlite3.Connection) -> None:
    """The same settings on a connection opened without diskcache (they hold per connection)."""
    for key, value in SQLITE_SETTINGS.items():
        connection.execute(f"PRAGMA {key.removeprefix('sqlite_')} = {value}")
