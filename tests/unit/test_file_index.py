"""The file cache's own index: a cache directory written by earlier versions (diskcache's index
over random file names) is adopted as it is, files stored by name come back if the index is
lost, and the totals the triggers keep agree with the rows."""

import concurrent.futures
import hashlib
import io
import multiprocessing
import os
from pathlib import Path

import diskcache

from gitlab_pypi_proxy.storage.file_index import BLOBS, INDEX, FileIndex
from gitlab_pypi_proxy.storage.stores import Stores

MIB = 2**20


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _earlier_cache(root: Path, contents: list[bytes]) -> list[str]:
    """`files/` as earlier versions left it: diskcache's `cache.db`, each file under a random
    name, the hit and miss counters. Returns the files' paths."""
    cache = diskcache.Cache(
        str(root), eviction_policy="none", cull_limit=0, statistics=1, disk_min_file_size=0
    )
    try:
        for content in contents:
            cache.set(_sha(content), io.BytesIO(content), read=True, tag=len(content))
        cache.get(_sha(contents[0]))  # a hit
        cache.get("0" * 64)  # a miss
        cache.stats(enable=False)
        paths = [cache.get(_sha(c), read=True).name for c in contents]
    finally:
        cache.close()
    return paths


async def test_a_cache_written_by_an_earlier_version_is_served_and_evicted(
    tmp_path: Path,
) -> None:
    contents = [os.urandom(MIB) for _ in range(3)]
    paths = _earlier_cache(tmp_path / "files", contents)
    assert all(Path(p).exists() and not Path(p).name.startswith(_sha(b"")) for p in paths)
    store = Stores.local(tmp_path, 4 * MIB)
    try:
        stats = store.blobs.stats()
        assert (stats.entries, stats.bytes, stats.hits, stats.misses) == (3, 3 * MIB, 1, 1)
        for content in contents:
            cached = await store.blobs.open(_sha(content))
            assert cached is not None
            body = b"".join([c async for c in cached.chunks(0, cached.size - 1)])
            cached.close()
            assert body == content
        newer = os.urandom(2 * MIB)
        store.downloads.add(_sha(newer), io.BytesIO(newer))  # room: the oldest goes
        assert [_sha(c) in store.blobs for c in contents] == [False, True, True]
        assert not Path(paths[0]).exists() and Path(paths[1]).exists()
    finally:
        store.close()


async def test_a_lost_index_finds_the_files_stored_by_name_again(tmp_path: Path) -> None:
    content = os.urandom(MIB)
    store = Stores.local(tmp_path, 10 * MIB)
    store.downloads.add(_sha(content), io.BytesIO(content))
    store.close()
    for leftover in (tmp_path / "files").glob(f"{INDEX}*"):
        leftover.unlink()
    stray = tmp_path / "files" / BLOBS / "ab" / "not-a-digest"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"x")  # not a name the cache gives: left alone
    again = Stores.local(tmp_path, 10 * MIB)
    try:
        assert again.blobs.stats().entries == 1
        cached = await again.blobs.open(_sha(content))
        assert cached is not None and cached.size == MIB
        cached.close()
    finally:
        again.close()


def test_the_totals_follow_every_change(tmp_path: Path) -> None:
    index = FileIndex(tmp_path, 10 * MIB)
    try:
        for number, size in enumerate((100, 200, 300)):
            spool = tmp_path / f"spool-{number}"
            spool.write_bytes(bytes(size))
            index.store(f"{number:064x}", str(spool), size)
        replacement = tmp_path / "spool-again"
        replacement.write_bytes(bytes(50))
        index.store(f"{1:064x}", str(replacement), 50)  # 200 bytes become 50
        index.delete(f"{0:064x}")
        assert index.totals()[:2] == (2, 350)
        assert index.digests() == [f"{1:064x}", f"{2:064x}"]
        assert sorted(p.name for p in (tmp_path / BLOBS).rglob("*") if p.is_file()) == [
            f"{1:064x}",
            f"{2:064x}",
        ]
    finally:
        index.close()


def _opened(directory: Path) -> tuple[int, int]:
    index = FileIndex(directory, MIB)
    try:
        return index.totals()[:2]
    finally:
        index.close()


def test_processes_sharing_a_new_directory_make_the_index_once(tmp_path: Path) -> None:
    """Processes opening an empty directory at once (workers starting): one index, whole, and
    none of them refused while another switches the new database to WAL. Many directories:
    the race is one of a few milliseconds."""
    directories = [tmp_path / str(n) for n in range(60)]
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(8, mp_context=spawn) as processes:
        for directory in directories:
            assert list(processes.map(_opened, [directory] * 8)) == [(0, 0)] * 8
