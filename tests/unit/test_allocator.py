"""What a big page cost a worker goes back to the system (gitlab_pypi_proxy.allocator): with glibc's
malloc for Python objects, the free pages of the heap are handed back around the few objects that
outlive the page; with CPython's own arenas they stay. Measured as resident memory from /proc."""

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from gitlab_pypi_proxy.allocator import ENVIRONMENT, Trimmer
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


def _measured(program: str, environment: dict[str, str]) -> list[Any]:
    """What `program` prints (JSON), run in an interpreter of its own with `environment`."""
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _run(environment: dict[str, str]) -> tuple[int, int, int, bool]:
    peak, freed, trimmed, could = _measured(PAGE_AND_SURVIVORS, environment)
    return peak, freed, trimmed, could


def test_with_serves_allocator_a_trim_gives_a_big_pages_memory_back() -> None:
    peak, freed, trimmed, could = _run(ENVIRONMENT)
    assert could
    assert peak - trimmed > 30 * MIB, (peak, freed, trimmed)


def test_with_cpythons_own_arenas_the_survivors_keep_it() -> None:
    """Why `serve` sets PYTHONMALLOC: the same page, freed, trimmed, is still held."""
    peak, freed, trimmed, _ = _run({})
    assert peak - trimmed < 10 * MIB, (peak, freed, trimmed)


# A big page's body freed, then buffers of 1 MiB among small objects that outlive them; what the
# process holds before the buffers, with them, and once they are freed (no trim).
BODY_THEN_BUFFERS = """
import json
from gitlab_pypi_proxy.allocator import resident
body = b"x" * (8 * 2**20)
del body
before = resident()
buffers, survivors = [], []
for n in range(24):
    buffers.append(b"y" * 2**20)
    survivors.extend("s" * 80 + str(i) for i in range(200))
held = resident()
buffers.clear()
print(json.dumps([before, held, resident()]))
"""


def _buffers(environment: dict[str, str]) -> tuple[int, int, int]:
    before, held, freed = _measured(BODY_THEN_BUFFERS, environment)
    return before, held, freed


def test_with_serves_allocator_big_buffers_go_back_as_soon_as_they_are_freed() -> None:
    before, held, freed = _buffers(ENVIRONMENT)
    assert held - before > 20 * MIB  # they were held
    assert freed - before < 4 * MIB, (before, held, freed)


def test_with_glibcs_moving_bound_big_buffers_stay_after_one_big_body() -> None:
    """Why `serve` sets MALLOC_MMAP_THRESHOLD_: without it, the same buffers stay resident."""
    environment = {k: v for k, v in ENVIRONMENT.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    before, held, freed = _buffers(environment)
    assert freed - before > 16 * MIB, (before, held, freed)


def _sizes(*mib: int) -> Callable[[], int]:
    """Resident memory as measured look after look (the last one from then on)."""
    ahead = list(mib)

    def measure() -> int:
        return (ahead.pop(0) if len(ahead) > 1 else ahead[0]) * MIB

    return measure


async def test_a_worker_trims_once_its_memory_has_grown_and_stopped_growing() -> None:
    # at start; grown less than the bound; a burst of work; over, grown by 12; after the trim
    measure = _sizes(100, 103, 103, 103, 106, 109, 112, 112, 109)
    looks_at_trims: list[int] = []
    looks = 0

    def counted() -> int:
        nonlocal looks
        looks += 1
        return measure()

    def release() -> bool:
        looks_at_trims.append(looks)
        return True

    trimmer = Trimmer(every=0, after=4 * MIB, measure=counted, release=release)
    running = asyncio.ensure_future(trimmer.run())
    try:
        await async_wait_until(lambda: looks > 30, "the trimmer looking on")
    finally:
        running.cancel()
    assert looks_at_trims == [8]  # once: at the first look that found no more growth


async def test_without_a_trim_in_the_c_library_the_worker_stops_looking() -> None:
    calls: list[int] = []

    def cannot() -> bool:
        calls.append(1)
        return False

    trimmer = Trimmer(every=0, after=MIB, measure=_sizes(0, 10), release=cannot)
    await asyncio.wait_for(trimmer.run(), timeout=30)  # returns
    assert calls == [1]
