"""Every SQLite database the proxy keeps is opened one way: the diskcaches (index records,
details, metadata, provenance, uploads) by `open_cache`, the proxy's own databases (the file
index, where files are listed: gitlab_pypi_proxy.storage.sqlite_db) given the same settings by
`lean`.

diskcache's defaults (a 64 MiB memory map and 32 MiB of page cache per connection, a connection
per thread) grow in a worker into resident memory never given back; the proxy reads a record at
a time, which the kernel's shared page cache serves as fast. So each connection maps nothing and
keeps a small cache (diskcache stores the settings in each database, where they outlast this
process). Every store keeps text, bytes and numbers only (gitlab_pypi_proxy.storage.record_format):
`PlainDisk` refuses what diskcache would pickle, in and out, so reading a cache never runs code.
A cache holding records of another format version (or pickles) is emptied when opened."""

import sqlite3
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE

from gitlab_pypi_proxy.storage.record_format import BadRecord

# PRAGMA mmap_size and cache_size (in pages, of 4 KiB): per connection
SQLITE_SETTINGS: dict[str, int] = {"sqlite_mmap_size": 0, "sqlite_cache_size": 16}


# The key under which each cache keeps the version of its records (record keys are JSON arrays).
FORMAT_KEY = "format"


class PlainDisk(diskcache.Disk):
    """diskcache's Disk for text, bytes and numbers alone: a key or value diskcache would pickle
    is refused (TypeError) before anything is written, and a pickled one read is BadRecord."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) not in (str, bytes, int, float):
            raise TypeError(f"a cache key is {type(key).__name__}, not text, bytes or a number")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise BadRecord("a pickled key")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.UNKNOWN) -> Any:
        if not read and type(value) not in (str, bytes, int, float):
            raise TypeError(f"a cache value is {type(value).__name__}, not text, bytes or a number")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise BadRecord("a pickled value")
        return super().fetch(mode, filename, value, read)


def open_cache(directory: Path | str, version: int, **settings: Any) -> diskcache.Cache:
    """The diskcache in `directory` (created if need be), with diskcache `settings` (an
    eviction policy, a size limit) over the memory-lean SQLite ones, emptied if its records are
    not of `version` (under FORMAT_KEY)."""
    cache = diskcache.Cache(str(directory), disk=PlainDisk, **{**SQLITE_SETTINGS, **settings})
    try:
        if _version(cache) != version:
            with cache.transact():
                if _version(cache) != version:
                    cache.clear()
                    cache.set(FORMAT_KEY, version)
    except BaseException:
        cache.close()
        raise
    return cache


def _version(cache: diskcache.Cache) -> object:
    try:
        return cache.get(FORMAT_KEY)
    except BadRecord:
        return None


def lean(connection: sqlite3.Connection) -> None:
    """The same settings on a connection opened without diskcache (they hold per connection)."""
    for key, value in SQLITE_SETTINGS.items():
        connection.execute(f"PRAGMA {key.removeprefix('sqlite_')} = {value}")
