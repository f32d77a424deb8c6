"""Every store's SQLite database maps nothing into memory and keeps a small page cache per
connection (gitlab_pypi_proxy.storage.disk_caches), also one an earlier version created with
diskcache's defaults (a 64 MiB map, 32 MiB of cache per connection and thread)."""

import asyncio
import sqlite3
from pathlib import Path

import diskcache

from gitlab_pypi_proxy.storage.details import DetailsStore
from gitlab_pypi_proxy.storage.disk_caches import SQLITE_SETTINGS
from gitlab_pypi_proxy.storage.local_blobs import LocalBlobStore
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.metadata import MetadataStore
from gitlab_pypi_proxy.storage.pages import Entry, PageStore
from gitlab_pypi_proxy.storage.provenance import ProvenanceStore
from gitlab_pypi_proxy.storage.uploads import RecentUploads

STORES = ("pages", "metadata", "provenance", "details", "recent-uploads", "files")


def _open_every_store(directory: Path) -> list[object]:
    coordinator = LocalCoordinator(directory)
    return [
        PageStore(directory, coordinator),
        MetadataStore(directory),
        ProvenanceStore(directory),
        DetailsStore(directory),
        RecentUploads(directory),
        LocalBlobStore(directory, 2**30),
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


def test_every_store_maps_nothing_and_caches_little(tmp_path: Path) -> None:
    stores = _open_every_store(tmp_path)
    for store in stores:
        store.close()  # type: ignore[attr-defined]
    for name in STORES:
        assert _recorded(tmp_path / name / "cache.db") == SQLITE_SETTINGS, name
    assert SQLITE_SETTINGS == {"sqlite_mmap_size": 0, "sqlite_cache_size": 16}


async def test_records_read_from_threads_leave_no_map_of_the_database(tmp_path: Path) -> None:
    store = PageStore(tmp_path, LocalCoordinator(tmp_path))
    try:
        for n in range(200):
            await store.put(("page", "pypi", f"name-{n}"), Entry("x" * 2000, 1.0))
        found = await asyncio.gather(
            *(store.get(("page", "pypi", f"name-{n}")) for n in range(200))
        )
        assert all(entry is not None for entry in found)
        assert not _mapped(tmp_path / "pages" / "cache.db")
    finally:
        store.close()


def test_a_database_made_with_diskcaches_defaults_takes_the_settings(tmp_path: Path) -> None:
    for name in STORES:
        diskcache.Cache(str(tmp_path / name)).close()
        assert _recorded(tmp_path / name / "cache.db") == {
            "sqlite_mmap_size": 2**26,
            "sqlite_cache_size": 2**13,
        }
    for store in _open_every_store(tmp_path):
        store.close()  # type: ignore[attr-defined]
    for name in STORES:
        assert _recorded(tmp_path / name / "cache.db") == SQLITE_SETTINGS, name
