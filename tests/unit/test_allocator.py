"""What a big page cost a worker goes back to the system (gitlab_pypi_proxy.allocator): with glibc's
malloc for Python objects, the free pages of the heap are handed back around the few objects that
outlive the page; with CPython's own arenas they stay. Measured as resident memory from /proc."""

import asyncio
import gc
import json
import subprocess
import sys
import weakref
from collections.abc import Callable

from gitlab_pypi_proxy.allocator import ENVIRONMENT, Trimmer, collect_and_trim, heap_in_use
from tests.waiting import async_wait_until

# A big page's worth of small objects (~60 MiB), of which one in fifty outlives it; then what
# the process holds, before and after a trim.
PAGE_AND_SURVIVORS = """
import gc, json
from gitlab_pypi_proxy.allocator import resident, trim
survivors, page = [], []
for n in range(500_000):
    text = "x" * (60 + n % 60) + str(n)
    (survivors if n % 50 == 0 else page).append(text)
peak = resident()
page.clear()
gc.collect()
freed = resident()
trimmed = trim()
print(json.dumps([peak, freed, resident(), trimmed]))
"""
MIB = 2**20


def _run(environment: dict[str, str]) -> tuple[int, int, int, bool]:
    done = subprocess.run(
        [sys.executable, "-c", PAGE_AND_SURVIVORS],
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    peak, freed, trimmed, could = json.loads(done.stdout)
    return peak, freed, trimmed, could


def test_with_serves_allocator_a_trim_gives_a_big_pages_memory_back() -> None:
    peak, freed, trimmed, could = _run(ENVIRONMENT)
    assert could
    assert peak - trimmed > 30 * MIB, (peak, freed, trimmed)


def test_with_cpythons_own_arenas_the_survivors_keep_it() -> None:
    """Why `serve` sets PYTHONMALLOC: the same page, freed, trimmed, is still held."""
    peak, freed, trimmed, _ = _run({})
    assert peak - trimmed < 10 * MIB, (peak, freed, trimmed)


def _sizes(*mib: int) -> Callable[[], int]:
    """Resident memory as measured look after look (the last one from then on)."""
    ahead = list(mib)

    def measure() -> int:
        return (ahead.pop(0) if len(ahead) > 1 else ahead[0]) * MIB

    return measure


async def _looks_at_trims(resident: Callable[[], int], in_use: Callable[[], int]) -> list[int]:
    """The looks (resident memory measured) at which a trimmer trims, over its first 30."""
    trims: list[int] = []
    looks = 0

    def counted() -> int:
        nonlocal looks
        looks += 1
        return resident()

    def release() -> bool:
        trims.append(looks)
        return True

    trimmer = Trimmer(every=0, after=4 * MIB, measure=counted, release=release, in_use=in_use)
    running = asyncio.ensure_future(trimmer.run())
    try:
        await async_wait_until(lambda: looks > 30, "the trimmer looking on")
    finally:
        running.cancel()
    return trims


async def test_a_worker_trims_once_its_memory_has_grown_and_stopped_growing() -> None:
    # at start; grown less than the bound; a burst of work; over, grown by 12; after the trim
    resident = _sizes(100, 103, 103, 103, 106, 109, 112, 112, 109)
    # once: at the first look that found no more growth
    assert await _looks_at_trims(resident, in_use=lambda: 0) == [8]


async def test_a_worker_trims_what_a_burst_freed_without_growing_any_further() -> None:
    # resident memory flat at 112 MiB (trimmed during a pause of the burst) while the rest of
    # the burst frees 20 MiB of it: in use 100, then 90, then 80
    in_use = _sizes(100, 100, 100, 97, 90, 80, 80, 80, 80, 80, 80, 110)
    # once 10 MiB more than at the start could be given back, not 3
    assert await _looks_at_trims(_sizes(112), in_use) == [5]


def test_what_the_heap_holds_in_use_follows_allocations() -> None:
    before = heap_in_use()
    block = bytearray(64 * MIB)
    held = heap_in_use()
    del block
    assert held - before >= 60 * MIB
    assert held - heap_in_use() >= 60 * MIB


async def test_without_a_trim_in_the_c_library_the_worker_stops_looking() -> None:
    calls: list[int] = []

    def cannot() -> bool:
        calls.append(1)
        return False

    trimmer = Trimmer(every=0, after=MIB, measure=_sizes(0, 10), release=cannot, in_use=lambda: 0)
    await asyncio.wait_for(trimmer.run(), timeout=30)  # returns
    assert calls == [1]


def test_a_trim_collects_the_cycles_a_burst_left_first() -> None:
    """An idle worker allocates too little for the collector to run by itself: what only a
    cycle keeps (a closed connection's transport and protocol, with their buffers) goes at the
    trim."""

    class Node:
        pass

    first, second = Node(), Node()
    first.other, second.other = second, first  # type: ignore[attr-defined]
    gone = weakref.ref(first)
    del first, second
    gc.disable()  # as if no allocation since had started a collection
    try:
        assert gone() is not None
        collect_and_trim()
        assert gone() is None
    finally:
        gc.enable()
