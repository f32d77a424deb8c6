"""How `serve`'s processes take memory from the C library, and how a worker gives back what a big
page cost it.

A big public page is a few hundred thousand small objects while it is parsed, merged and
rendered, and nothing once it is answered; CPython's arenas go back only once every object in
one is gone, so a worker kept the memory of its busiest moment for good. With glibc's malloc for
every object (PYTHONMALLOC=malloc) and one arena (MALLOC_ARENA_MAX=1), `malloc_trim` hands free
pages back whatever lives around them. glibc's moving bound for buffers mapped of their own is
left alone: fixed at 128 KiB or 1 MiB, it gave back a few MiB sooner but halved the rate of a
warm 100 MiB download (bench scenario 2: each chunk on fresh pages). `ENVIRONMENT` is what
`serve` starts its processes with (an operator's own values win); each worker runs `Trimmer`,
which collects reference cycles and trims in a thread once the memory a trim could give back
grew by TRIM_AFTER and resident memory stopped growing: after a burst, not during one (a trim
holds the heap's lock for milliseconds). What a trim could give back is resident memory beyond
what the heap's allocations take (glibc's mallinfo2), not growth alone: a trim made during a
pause of a burst left the rest of the burst's memory (19 MiB of a worker's 68 after a cold
install) unreturned, since the burst freed it without growing any further. Without glibc (musl,
macOS) trimming does nothing."""

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable
from functools import cache
from typing import Any

log = logging.getLogger("proxy.memory")

ENVIRONMENT = {"PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "1"}
TRIM_EVERY = 1.0  # seconds
TRIM_AFTER = 4 * 2**20  # bytes a trim could give back, grown since the last trim


def resident() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@cache
def _glibc(function: str, returns: Any = ctypes.c_int) -> Any:
    """The C library's `function`, returning `returns`, or None where it has none (not glibc,
    or an older one: mallinfo2 came with 2.33)."""
    name = ctypes.util.find_library("c")
    try:
        found = ctypes.CDLL(name)[function] if name else None
    except (OSError, AttributeError):
        return None
    if found is not None:
        found.restype = returns
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in chunks mapped of their own
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes allocated from the heap
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use() -> int:
    """Bytes the C heap's allocations take (0 where the C library does not say). Walks the
    heap's free lists holding its lock (at most 2.3 ms, 1.7 at the 90th percentile, in a
    worker through the real-index installs): call it in a thread."""
    mallinfo2 = _glibc("mallinfo2", _MallInfo2)
    if mallinfo2 is None:
        return 0
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def collect_and_trim() -> bool:
    """`trim`, once the reference cycles a burst left are collected (a closed connection's TLS
    transport and protocol, with their buffers): an idle worker allocates too little for the
    collector to run by itself."""
    gc.collect()
    return trim()


def trim() -> bool:
    """Hand the free pages of the C heap back to the system (blocking: call it in a thread);
    False when the C library cannot."""
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


class Trimmer:
    """A worker's trims: `run` looks every `every` seconds and trims once what a trim could
    give back (resident memory beyond `in_use`) has grown by `after` bytes since the last trim
    (or the start) and resident memory has not grown since it last looked."""

    def __init__(
        self,
        every: float = TRIM_EVERY,
        after: int = TRIM_AFTER,
        measure: Callable[[], int] = resident,
        release: Callable[[], bool] = collect_and_trim,
        in_use: Callable[[], int] = heap_in_use,
    ) -> None:
        self.every, self.after = every, after
        self.measure, self.release, self.in_use = measure, release, in_use

    async def run(self) -> None:
        """Until cancelled."""
        last = self.measure()
        floor = await self._slack(last)
        while True:
            await asyncio.sleep(self.every)
            now = self.measure()
            growing = now - last > self.after // 4  # a burst of work under way
            last = now
            if growing or await self._slack(now) - floor < self.after:
                continue
            if not await asyncio.to_thread(self.release):
                log.debug("the C library cannot trim its heap: not trimming")
                return
            last = self.measure()
            floor = await self._slack(last)

    async def _slack(self, resident: int) -> int:
        """Resident memory beyond what the heap's allocations take: the free memory a trim
        gives back, and what none can (code, stacks, pages that still hold something)."""
        return resident - await asyncio.to_thread(self.in_use)
