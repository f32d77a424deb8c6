"""The asyncio building blocks every part of the proxy uses, one copy of each.

- `SingleFlight`: concurrent callers for one key share one run of the work. The run is a task of
  its own, awaited through a shield: a caller that goes away (its client hung up, a timeout)
  never cancels the work the others wait for. A run may carry a handle its callers share (the
  download that followers read as it grows).
- `TaskSet`: background work, kept referenced until done, its failures logged (never a "Task
  exception was never retrieved"), waited for or cancelled when the owner closes.
- `TTLMemo`: a bounded in-memory map whose entries may expire; when full, the entry set longest
  ago goes first (setting a key again makes it the newest). Expired entries are dropped as new
  ones are set, so a memo of short-lived entries shrinks back instead of staying full.
- `off_loop`: work linear in a page's files, in a thread once the page is big enough for it to
  block the event loop (a project of 10,000 files), inline below that (a thread hop costs more
  than a small page's work); CPU_SLOTS such threads at a time per event loop: the GIL lets one
  thread run at a time anyway, and the event loop waits for it behind every thread that wants
  it (each holds it for the switch interval: 4 threads kept the loop waiting up to 36 ms, 1
  thread 5 ms).
- `THREADS`: the event loop's threads for blocking work (`asyncio.to_thread`, `off_loop`): the
  CPU_SLOTS that may be parsing big pages and one for the rest (SQLite lookups, file opens and
  reads, each short and releasing the GIL). asyncio's default, cores + 4 (6 on two cores), held
  more than it served: every thread keeps a connection to each of the proxy's SQLite databases,
  ~150 KiB each (31 connections in a worker after a cold install), and 3 threads instead of 6
  left each worker 3 MiB smaller after the real-index install, its resolve no slower.
- `long_work`: blocking work that takes seconds and opens no database (an upload's digests,
  the advisories' export read), on LONG_THREADS threads of its own: three uploads hashed at
  once must not hold every one of THREADS while page lookups wait behind them.
"""

import asyncio
import contextvars
import functools
import itertools
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
V = TypeVar("V")


BIG = 500  # items from which per-item Python work (~3-10 µs each) goes to a thread
CPU_SLOTS = 2  # threads doing such work at once, per event loop
THREADS = CPU_SLOTS + 1  # the event loop's default executor, per worker
LONG_THREADS = 2  # long_work's threads, per process
BYTES_PER_FILE = 200  # about what a page or a record takes per file it lists: its item count
_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
    weakref.WeakKeyDictionary()
)


async def off_loop(items: int, work: Callable[..., R], *args: Any) -> R:
    """`work(*args)`, in a thread when it handles `items` >= BIG things (one of CPU_SLOTS)."""
    if items < BIG:
        return work(*args)
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(CPU_SLOTS)
    async with slots:
        return await asyncio.to_thread(work, *args)


_long = ThreadPoolExecutor(LONG_THREADS, thread_name_prefix="long")


async def long_work(work: Callable[..., R], *args: Any) -> R:
    """`work(*args)` in one of LONG_THREADS threads kept for work that takes seconds and opens
    no database (a thread keeps a connection to each database it opens)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, work, *args)
    return await asyncio.get_running_loop().run_in_executor(_long, call)


@dataclass(eq=False)
class _Flight(Generic[V]):
    handle: Any
    task: "asyncio.Future[V]" = field(init=False)


class SingleFlight(Generic[K, V]):
    """At most one run of the work per key at a time, in this process.

    `joined` is called each time a caller joins a run under way (a metric, say).
    """

    def __init__(self, joined: Callable[[], None] | None = None) -> None:
        self._flights: dict[K, _Flight[V]] = {}
        self._joined = joined

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    def handle(self, key: K) -> Any:
        """The handle of the run of `key` under way (None if none runs or it has none)."""
        flight = self._flights.get(key)
        return None if flight is None else flight.handle

    def start(
        self, key: K, work: Callable[[], Coroutine[Any, Any, V]], handle: Any = None
    ) -> "asyncio.Future[V]":
        """The run of `key` under way, joined; else a new run of `work` (with `handle`)."""
        flight = self._flights.get(key)
        if flight is not None:
            if self._joined is not None:
                self._joined()
            return flight.task
        flight = _Flight(handle)
        flight.task = asyncio.ensure_future(work())
        self._flights[key] = flight
        flight.task.add_done_callback(lambda task: self._landed(key, flight, task))
        return flight.task

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The result of the one run of `key`; this caller's cancellation does not reach it."""
        return await asyncio.shield(self.start(key, work))

    def finish(self, key: K) -> None:
        """End the run of `key` for new callers now, from within its work, rather than once its
        task is done (one turn of the loop later); those already in it are not affected."""
        self._flights.pop(key, None)

    def _landed(self, key: K, flight: "_Flight[V]", task: "asyncio.Future[V]") -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every caller may have gone

    async def close(self) -> None:
        """Cancel every run under way and wait for them to end."""
        tasks = [flight.task for flight in self._flights.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class TaskSet:
    """Background work of one owner. A failure is logged as `<what> failed: <why>`."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log, self._what = log, what
        self._tasks: dict[asyncio.Future[Any], Hashable] = {}
        self._keys: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator["asyncio.Future[Any]"]:
        return iter(list(self._tasks))

    def __contains__(self, key: object) -> bool:
        """Is work started with this `key` still running?"""
        return key in self._keys

    def spawn(
        self, work: Awaitable[Any], *, key: Hashable | None = None
    ) -> "asyncio.Future[Any] | None":
        """Run `work` in the background; with a `key`, not while work of that key runs (then
        `work`, a coroutine, is closed unstarted and None returned)."""
        if key is not None and key in self._keys:
            if asyncio.iscoroutine(work):
                work.close()  # never awaited: no warning that it was not
            return None
        task = asyncio.ensure_future(work)
        self._tasks[task] = key
        if key is not None:
            self._keys.add(key)
        task.add_done_callback(self._landed)
        return task

    def _landed(self, task: "asyncio.Future[Any]") -> None:
        key = self._tasks.pop(task, None)
        if key is not None:
            self._keys.discard(key)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.warning("%s failed: %s", self._what, exc)

    async def settled(self) -> None:
        """Wait until the work started so far, and any it started meanwhile, has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel the work under way and wait for it to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_MISSING = object()


class TTLMemo(Generic[K, V]):
    """At most `capacity` entries, each kept until its time passes (`ttl` seconds after it is
    set unless `set` says otherwise; by default never). Times are `clock`'s. With `weigh`, also
    at most `max_weight` in all (bytes, say): the oldest entries go first, and a value heavier
    than that on its own is not kept."""

    def __init__(
        self,
        capacity: int,
        ttl: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        *,
        weigh: Callable[[V], int] | None = None,
        max_weight: float = math.inf,
    ) -> None:
        self.capacity, self.ttl, self.clock = capacity, ttl, clock
        self.weigh, self.max_weight = weigh, max_weight
        self.weight = 0  # of the entries held, expired ones included until they are dropped
        self._entries: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TTLMemo({ {key: value for key, (_, value) in self._entries.items()}!r})"

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def get(self, key: K, default: Any = None) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return default
        if entry[0] <= self.clock():
            self.pop(key)
            return default
        return entry[1]

    def set(self, key: K, value: V, *, until: float | None = None) -> None:
        """Keep `value` until `until` (a time of the clock), or for the memo's `ttl`."""
        now = self.clock()
        expires = now + self.ttl if until is None else until
        self.pop(key)
        self._drop_expired(now)
        weight = self.weigh(value) if self.weigh is not None else 0
        if weight > self.max_weight:
            return
        while self._entries and (
            len(self._entries) >= self.capacity or self.weight + weight > self.max_weight
        ):
            self.pop(next(iter(self._entries)))
        self._entries[key] = (expires, value)
        self.weight += weight

    def _drop_expired(self, now: float, most: int = 2) -> None:
        """Drop up to `most` expired entries among the oldest: a few per `set`, so the work is
        spread over the sets (entries of one `ttl` expire in the order they were set)."""
        for key in list(itertools.islice(self._entries, most)):
            if self._entries[key][0] > now:
                return
            self.pop(key)

    def pop(self, key: K, default: Any = None) -> Any:
        entry = self._entries.pop(key, None)
        if entry is None:
            return default
        if self.weigh is not None:
            self.weight -= self.weigh(entry[1])
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()
        self.weight = 0

    def values(self) -> list[V]:
        """The values not expired, oldest first."""
        now = self.clock()
        return [value for expires, value in self._entries.values() if expires > now]
