"""The one copy of each asyncio building block: single-flight, background task sets, TTL memos."""

import asyncio
import contextvars
import logging
import threading

import pytest

from gitlab_pypi_proxy import aio
from gitlab_pypi_proxy.aio import (
    BIG,
    LONG_THREADS,
    SingleFlight,
    TaskSet,
    TTLMemo,
    long_work,
    off_loop,
)
from tests.waiting import async_wait_until


async def test_single_flight_shares_one_run_that_a_cancelled_caller_does_not_stop() -> None:
    joins: list[int] = []
    flights: SingleFlight[str, str] = SingleFlight(lambda: joins.append(1))
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def work() -> str:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return "done"

    first = asyncio.ensure_future(flights.run("k", work))
    await started.wait()
    second = asyncio.ensure_future(flights.run("k", work))
    await async_wait_until(lambda: joins, "the second caller joined the run")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == "done"
    assert (runs, len(joins), "k" in flights) == (1, 1, False)
    assert await flights.run("k", work) == "done"  # over: the next caller runs it anew
    assert runs == 2


async def test_single_flight_hands_out_the_runs_handle_and_forgets_it_when_done() -> None:
    flights: SingleFlight[str, None] = SingleFlight()
    release = asyncio.Event()
    task = flights.start("k", release.wait, handle="the download")  # type: ignore[arg-type]
    assert flights.handle("k") == "the download"
    assert flights.start("k", release.wait) is task  # joined, not started again
    release.set()
    await task
    assert flights.handle("k") is None and len(flights) == 0


async def test_a_task_set_logs_failures_runs_one_per_key_and_cancels_on_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSet(logging.getLogger("test.aio"), "background work")

    async def fail() -> None:
        raise RuntimeError("it broke")

    with caplog.at_level(logging.WARNING, logger="test.aio"):
        tasks.spawn(fail())
        await tasks.settled()
    assert "background work failed: it broke" in caplog.text
    forever = asyncio.Event()
    assert tasks.spawn(forever.wait(), key="name") is not None
    assert tasks.spawn(forever.wait(), key="name") is None  # one per key at a time
    assert "name" in tasks and len(tasks) == 1
    await tasks.close()
    assert len(tasks) == 0 and "name" not in tasks


def test_a_ttl_memo_expires_entries_and_drops_the_oldest_set_when_full() -> None:
    now = [100.0]
    memo: TTLMemo[str, int] = TTLMemo(2, ttl=10.0, clock=lambda: now[0])
    memo.set("a", 1)
    memo.set("b", 2)
    memo.set("a", 3)  # set again: now the newest
    memo.set("c", 4)  # full: "b", set longest ago, goes
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (3, None, 4)
    now[0] += 10.0
    assert "a" not in memo and memo.get("c", "gone") == "gone"
    memo.set("d", None, until=now[0] + 1)  # type: ignore[arg-type]
    assert "d" in memo and memo.get("d", "missing") is None
    assert repr(memo) == "TTLMemo({'d': None})"


def test_a_weighed_ttl_memo_holds_at_most_its_weight_dropping_the_oldest_first() -> None:
    memo: TTLMemo[str, bytes] = TTLMemo(100, weigh=len, max_weight=10)
    memo.set("a", b"1234")
    memo.set("b", b"1234")
    memo.set("c", b"1234")  # 12 > 10: "a", set longest ago, goes
    assert ("a" in memo, "b" in memo, "c" in memo) == (False, True, True)
    assert memo.weight == 8
    memo.set("too heavy", b"12345678901")  # heavier than the whole memo: not kept, none dropped
    assert "too heavy" not in memo and memo.weight == 8 and len(memo) == 2
    memo.set("b", b"1")  # set again: its old weight no longer counts
    assert memo.weight == 5
    memo.pop("c")
    assert memo.weight == 1
    memo.clear()
    assert memo.weight == 0 and len(memo) == 0


def test_an_expired_entry_no_longer_weighs() -> None:
    now = [0.0]
    memo: TTLMemo[str, bytes] = TTLMemo(100, ttl=5.0, clock=lambda: now[0], weigh=len)
    memo.set("a", b"1234")
    now[0] += 5.0
    assert memo.get("a") is None and memo.weight == 0


def test_expired_entries_go_as_new_ones_are_set() -> None:
    """A memo of short-lived entries (names warmed, metadata that failed) shrinks back to what
    is live instead of staying at its capacity."""
    now = [0.0]
    memo: TTLMemo[str, bytes] = TTLMemo(10_000, ttl=5.0, clock=lambda: now[0], weigh=len)
    for n in range(1000):
        memo.set(f"old-{n}", b"x" * 100)
    now[0] += 5.0
    for n in range(600):
        memo.set(f"new-{n}", b"y")
    assert len(memo) == 600 and memo.weight == 600
    assert memo.get("new-0") == b"y"


async def test_work_on_a_big_page_runs_in_a_thread_on_a_small_one_inline() -> None:
    """A long history's 10,000 files once blocked the event loop for ~100 ms (`_newest` parsed
    every version on it)."""
    loop_thread = threading.get_ident()
    assert await off_loop(BIG - 1, threading.get_ident) == loop_thread
    assert await off_loop(BIG, threading.get_ident) != loop_thread
    assert await off_loop(BIG, lambda a, b: a + b, 2, 3) == 5


async def test_big_work_runs_in_at_most_cpu_slots_threads_at_once() -> None:
    """The GIL runs one thread at a time anyway; each more thread wanting it makes the event
    loop wait longer for it."""
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with lock:
            running -= 1

    calls = [asyncio.ensure_future(off_loop(BIG, work)) for _ in range(aio.CPU_SLOTS + 3)]
    await async_wait_until(lambda: running == aio.CPU_SLOTS, "the slots to fill")
    release.set()
    await asyncio.gather(*calls)
    assert most == aio.CPU_SLOTS


async def test_long_work_runs_on_threads_of_its_own_in_the_callers_context() -> None:
    """Uploads hashed at once never hold the threads the event loop's lookups run on."""
    release = threading.Event()
    started: list[str] = []
    asked = contextvars.ContextVar("asked", default="")
    asked.set("this request")

    def hold() -> str:
        started.append(threading.current_thread().name)
        release.wait(30)
        return asked.get()

    held = [asyncio.ensure_future(long_work(hold)) for _ in range(LONG_THREADS + 1)]
    try:
        await async_wait_until(lambda: len(started) == LONG_THREADS, "long work under way")
        assert await asyncio.to_thread(threading.get_ident) != threading.get_ident()
        assert len(started) == LONG_THREADS  # the last one waits for a thread of its own kind
    finally:
        release.set()
    assert await asyncio.gather(*held) == ["this request"] * (LONG_THREADS + 1)
    assert all(name.startswith("long") for name in started)
