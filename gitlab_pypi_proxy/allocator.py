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
which collects reference cycles and trims in a thread once resident memory grew by TRIM_AFTER
and stopped growing: after a burst, not during one (a trim holds the heap's lock for
milliseconds). Without glibc (musl, macOS) trimming does nothing."""

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable
from functools import cache

log = logging.getLogger("proxy.memory")

ENVIRONMENT = {"PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "1"}
TRIM_EVERY = 1.0  # seconds
TRIM_AFTER = 4 * 2**20  # bytes of resident memory grown since the last trim


def resident() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def collect_and_trim() -> bool:
    """`trim`, once the reference cycles a burst left are collected (a closed connection's TLS
    transport and protocol, with their buffers): an idle worker allocates too little for the
    collector to run by itself."""
    gc.collect()
    return trim()


def trim() -> bool:
    """Hand the free pages of the C heap back to the system (blocking: call it in a thread);
    False when the C library cannot."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


class Trimmer:
    """A worker's trims: `run` looks every `every` seconds and trims once resident memory has
    grown by `after` bytes since the last trim (or the start) and not since it last looked."""

    def __init__(
        self,
        every: float = TRIM_EVERY,
        after: int = TRIM_AFTER,
        measure: Callable[[], int] = resident,
        release: Callable[[], bool] = collect_and_trim,
    ) -> None:
        self.every, self.after = every, after
        self.measure, self.release = measure, release

    async def run(self) -> None:
        """Until cancelled."""
        floor = last = self.measure()
        while True:
            await asyncio.sleep(self.every)
            now = self.measure()
            growing = now - last > self.after // 4  # a burst of work under way
            last = now
            if now - floor < self.after or growing:
                continue
            if not await asyncio.to_thread(self.release):
                log.debug("the C library cannot trim its heap: not trimming")
                return
            floor = last = self.measure()
