"""Every store's SQLite database maps nothing into memory and keeps a small page cache per
connection (gitlab_pypi_proxy.storage.disk_caches), also a diskcache an earlier version created
with diskcache's defaults (a 64 MiB map, 32 MiB of cache per connection and thread) and the file
index's own connections (SQLite's default: 2 MiB of cache each). Measured as what SQLite itself
holds (sqlite3_memory_used) and what the process maps (/proc/self/maps)."""

import asyncio
import ctypes
import ctypes.util
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import diskcache

from gitlab_pypi_proxy.storage.details import DetailsStore
from gitlab_pypi_proxy.storage.disk_caches import SQLITE_SETTINGS
from gitlab_pypi_proxy.storage.file_index import FileIndex
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.metadata_store import MetadataStore
from gitlab_pypi_proxy.storage.pages import Entry, PageStore
from gitlab_pypi_proxy.storage.provenance_store import ProvenanceStore
from gitlab_pypi_proxy.storage.uploads import RecentUploads

DISKCACHES = ("pages", "metadata", "provenance", "details", "recent-uploads")
MIB = 2**20


def _open_every_store(directory: Path) -> list[object]:
    coordinator = LocalCoordinator(directory)
    return [
        PageStore(directory, coordinator),
        MetadataStore(directory),
        ProvenanceStore(directory),
        DetailsStore(directory),
        RecentUploads(directory),
        coordinator,
    ]


def _recorded(database: Path) -> dict[str, int]:
    """The SQLite settings diskcache applies to every connection it opens to `database`."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT key, value FROM Settings WHERE key IN (?, ?)", tuple(SQLITE_SETTINGS)
        ).fetchall()
    return dict(rows)


def _mapped(database: Path) -> bool:
    """Does this process map `database` into its memory (not its WAL index, `-shm`, which
    SQLite always maps: 32 KiB)?"""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return any(line.endswith(f" {database}") for line in lines)


def _sqlite_memory() -> Callable[[], int]:
    """SQLite's own count of the memory it holds in this process (every connection)."""
    library = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library.sqlite3_memory_used


def _in_a_new_thread(work: Callable[[], object]) -> int:
    """What SQLite holds more once `work` has run in a thread of its own (its own connection,
    as each thread of asyncio.to_thread's pool has), the thread still alive."""
    used = _sqlite_memory()
    done, stop = threading.Event(), threading.Event()
    grown = [0]

    def run() -> None:
        before = used()
        work()
        grown[0] = used() - before
        done.set()
        stop.wait(30)

    thread = threading.Thread(target=run)
    thread.start()
    done.wait(60)
    stop.set()
    thread.join()
    return grown[0]


def test_every_diskcache_records_the_settings(tmp_path: Path) -> None:
    for store in _open_every_store(tmp_path):
        store.close()  # type: ignore[attr-defined]
    for name in DISKCACHES:
        assert _recorded(tmp_path / name / "cache.db") == SQLITE_SETTINGS, name
    assert SQLITE_SETTINGS == {"sqlite_mmap_size": 0, "sqlite_cache_size": 16}


def test_a_diskcache_made_with_diskcaches_defaults_takes_the_settings(tmp_path: Path) -> None:
    for name in DISKCACHES:
        diskcache.Cache(str(tmp_path / name)).close()
        assert _recorded(tmp_path / name / "cache.db") == {
            "sqlite_mmap_size": 2**26,
            "sqlite_cache_size": 2**13,
        }
    for store in _open_every_store(tmp_path):
        store.close()  # type: ignore[attr-defined]
    for name in DISKCACHES:
        assert _recorded(tmp_path / name / "cache.db") == SQLITE_SETTINGS, name


async def test_records_read_from_a_thread_cost_sqlite_little_and_map_nothing(
    tmp_path: Path,
) -> None:
    store = PageStore(tmp_path, LocalCoordinator(tmp_path))
    keys = [("page", "pypi", f"name-{n}") for n in range(2000)]
    try:
        for key in keys:  # ~5 MiB of records kept in the database itself
            await store.put(key, Entry(os.urandom(1200).hex(), 1.0))
        grown = _in_a_new_thread(lambda: [store.get_now(key) for key in keys])
        assert not _mapped(tmp_path / "pages" / "cache.db")
        found = await asyncio.gather(*(store.get(key) for key in keys[:100]))
        assert all(entry is not None for entry in found)
    finally:
        store.close()
    # diskcache's 8,192 pages would have kept the database: 5 MiB
    assert grown < MIB // 2, grown


def test_the_file_indexs_connections_keep_a_small_cache(tmp_path: Path) -> None:
    index = FileIndex(tmp_path / "files", 2**40)
    try:
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        for n in range(5000):
            path = incoming / str(n)
            path.write_bytes(b"x")
            index.store(f"{n:064x}", str(path), 1)
        grown = _in_a_new_thread(lambda: [index.find(f"{n:064x}") for n in range(0, 5000, 3)])
    finally:
        index.close()
    # SQLite's default cache of 2 MiB would have kept the index (~1 MiB) whole
    assert grown < MIB // 2, grown
