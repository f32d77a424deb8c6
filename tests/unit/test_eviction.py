"""Eviction: only what must go, least recently used first, never what is being stored or served.

The sizes are the issue's cases scaled down ten times (15 MiB wheels → 1.5 MiB, limits of 100 and
200 MiB → 10 and 20 MiB): the failure they showed depends on the number of entries, not on bytes.
"""

import asyncio
import hashlib
import io
import os
from pathlib import Path

import pytest

from gitlab_pypi_proxy.storage import usage
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.fakes import FakeSource
from tests.waiting import wait_until

MIB = 2**20
WHEEL = 3 * MIB // 2


def _contents(count: int, size: int = WHEEL) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def _download(store: Stores, source: FakeSource, content: bytes) -> None:
    sha = _sha(content)
    download = store.downloads.download(
        sha, lambda: source.open_file(source.file_for(sha, "x.whl"))
    )
    await download.wait()


def _kept(store: Stores, contents: list[bytes]) -> list[bool]:
    return [_sha(c) in store.blobs for c in contents]


async def test_six_more_wheels_past_a_little_over_the_limit_evict_only_the_oldest(
    tmp_path: Path,
) -> None:
    """100 MiB holding one 15 MiB wheel, six more prefetched: it used to end empty."""
    store = Stores.local(tmp_path, 10 * MIB)
    old, *new = _contents(7)
    store.downloads.add(_sha(old), io.BytesIO(old))
    source = FakeSource("s", contents={_sha(c): c for c in new})
    await asyncio.gather(*(_download(store, source, c) for c in new))
    assert _kept(store, new) == [True] * 6
    assert _sha(old) not in store.blobs
    assert store.blobs.stats().bytes <= 10 * MIB
    store.close()


def test_the_fourteenth_file_evicts_one_not_ten(tmp_path: Path) -> None:
    """200 MiB: the fourteenth 15 MiB file used to drop the cache from 195 to 60 MiB."""
    store = Stores.local(tmp_path, 20 * MIB)
    contents = _contents(14)
    for content in contents:
        store.downloads.add(_sha(content), io.BytesIO(content))
    assert _kept(store, contents) == [False] + [True] * 13
    assert 19 * MIB < store.blobs.stats().bytes <= 20 * MIB
    store.close()


async def test_least_recently_used_goes_first_not_least_recently_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage, "STAMP_SECONDS", 0.0)  # every use counts at once
    store = Stores.local(tmp_path, 5 * MIB)
    first, second, third, fourth = _contents(4)
    for content in (first, second, third):
        store.downloads.add(_sha(content), io.BytesIO(content))
    used = await store.blobs.open(_sha(first))  # a client's hit
    assert used is not None
    used.close()
    store.downloads.add(_sha(fourth), io.BytesIO(fourth))
    assert _kept(store, [first, second, third, fourth]) == [True, False, True, True]
    store.close()


async def test_an_entry_being_served_is_never_evicted(tmp_path: Path) -> None:
    store = Stores.local(tmp_path, 5 * MIB)
    first, second, third, fourth = _contents(4)
    for content in (first, second, third):
        store.downloads.add(_sha(content), io.BytesIO(content))
    served = await store.blobs.open(_sha(first))  # the least recently used, open for a client
    assert served is not None
    store.downloads.add(_sha(fourth), io.BytesIO(fourth))
    assert _kept(store, [first, second, third, fourth]) == [True, False, True, True]
    served.close()
    store.close()


async def test_a_download_in_progress_counts_against_the_limit(tmp_path: Path) -> None:
    """Its announced size is made room for when it starts, before its bytes are on disk."""
    store = Stores.local(tmp_path, 5 * MIB)
    first, second, third, coming = _contents(4)
    for content in (first, second, third):
        store.downloads.add(_sha(content), io.BytesIO(content))
    gate = asyncio.Event()
    source = FakeSource("s", contents={_sha(coming): coming}, gate=gate)
    download = store.downloads.download(
        _sha(coming), lambda: source.open_file(source.file_for(_sha(coming), "x.whl"))
    )
    await download.started
    await asyncio.to_thread(
        wait_until, lambda: _sha(first) not in store.blobs, "room made for the download", 10
    )
    assert _kept(store, [second, third]) == [True, True]
    gate.set()
    await download.wait()
    assert _kept(store, [first, second, third, coming]) == [False, True, True, True]
    store.close()


def test_partial_downloads_on_disk_count_against_the_limit(tmp_path: Path) -> None:
    """Another worker's download (or an orphan from a killed one) takes room too."""
    store = Stores.local(tmp_path, 5 * MIB)
    first, second, third = _contents(3)
    for content in (first, second):
        store.downloads.add(_sha(content), io.BytesIO(content))
    (tmp_path / "files" / "incoming" / "0123456789abcdefxyz.part").write_bytes(bytes(WHEEL))
    store.downloads.add(_sha(third), io.BytesIO(third))
    assert _kept(store, [first, second, third]) == [False, True, True]
    store.close()


async def test_a_file_larger_than_the_cache_is_served_but_not_kept(tmp_path: Path) -> None:
    store = Stores.local(tmp_path, 2 * MIB)
    small, huge = os.urandom(MIB // 2), os.urandom(3 * MIB)
    store.downloads.add(_sha(small), io.BytesIO(small))
    source = FakeSource("s", contents={_sha(huge): huge})
    download = store.downloads.download(
        _sha(huge), lambda: source.open_file(source.file_for(_sha(huge), "x.whl"))
    )
    body = b"".join([chunk async for chunk in download.follow()])
    assert body == huge
    assert _sha(huge) not in store.blobs
    assert _sha(small) in store.blobs  # nothing was evicted for a file that cannot stay
    store.close()
