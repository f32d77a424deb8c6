"""The workers' lock on one machine (gitlab_pypi_proxy.storage.local_coordinator): one holder at a
time, also when a holder lets go without doing the work (a look-ahead that declined) while one
worker waits on the released lock file and another makes a new one."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gitlab_pypi_proxy.storage import local_coordinator
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from tests.waiting import async_wait_until


async def test_one_holder_at_a_time_when_a_waiter_held_on_to_a_released_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = (LocalCoordinator(tmp_path) for _ in range(3))  # three workers
    real_sleep = asyncio.sleep
    polls = 0
    go_on = asyncio.Event()

    class Paced:
        """The module's asyncio, with the lock's polling paced by the test."""

        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

        @staticmethod
        async def sleep(seconds: float) -> None:
            nonlocal polls
            polls += 1
            await go_on.wait()
            await real_sleep(0.001)

    monkeypatch.setattr(local_coordinator, "asyncio", Paced())
    holding: list[str] = []
    most = 0

    async def hold(coordinator: LocalCoordinator, name: str, release: asyncio.Event) -> None:
        nonlocal most
        async with coordinator.lock("digest"):
            holding.append(name)
            most = max(most, len(holding))
            await release.wait()
            holding.remove(name)

    releases = {name: asyncio.Event() for name in ("first", "second", "third")}
    one = asyncio.create_task(hold(first, "first", releases["first"]))
    await async_wait_until(lambda: holding == ["first"], "the first holder")
    two = asyncio.create_task(hold(second, "second", releases["second"]))
    await async_wait_until(lambda: polls >= 1, "the second waiting on the first's file")
    releases["first"].set()  # lets go without the work: the file is unlinked
    await one
    three = asyncio.create_task(hold(third, "third", releases["third"]))
    await async_wait_until(lambda: holding == ["third"], "the third on a new file")
    go_on.set()  # the second gets the old file's lock now
    await async_wait_until(lambda: polls >= 3 or len(holding) > 1, "the second's next try")
    assert holding == ["third"]
    releases["third"].set()
    await three
    await async_wait_until(lambda: holding == ["second"], "the second, after the third")
    releases["second"].set()
    await two
    assert most == 1
