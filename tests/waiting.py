"""The one way tests wait: poll a condition until it holds, with a deadline, never a bare sleep."""

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, seconds: float = 20.0) -> T:
    """Poll `check` until it returns something truthy and return that; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds}s")
        time.sleep(0.05)  # polling a condition with a deadline, not synchronising by time


async def async_wait_until(check: Callable[[], T], what: str, seconds: float = 20.0) -> T:
    """`wait_until` for async tests: the event loop keeps running while it polls."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds}s")
        await asyncio.sleep(0.01)  # polling a condition with a deadline, not synchronising by time
