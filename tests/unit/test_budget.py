"""GitLab's request budget: a token bucket shared through a file, GitLab's 429 honoured by every
process, background work yielding to client requests (a fake clock: nothing here waits); and any
upstream's 429 taken for "not now", never "not here"."""

import asyncio
import time
from pathlib import Path

import httpx2
import pytest
import respx

from gitlab_pypi_proxy.errors import RateLimited
from gitlab_pypi_proxy.sources.budget import CLIENT_WAIT, Budget
from gitlab_pypi_proxy.sources.upstream import Upstream, retry_after
from gitlab_pypi_proxy.storage.local_coordinator import SharedFile


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _budget(clock: Clock, per_minute: int, path: Path | None = None, **kw) -> Budget:
    shared = None if path is None else SharedFile(path)  # as the local coordinator hands it
    return Budget(per_minute, shared, clock=clock, sleep=clock.sleep, **kw)


async def test_client_requests_spend_the_whole_minute_then_wait_briefly_or_fail() -> None:
    clock = Clock()
    budget = _budget(clock, 60)  # one request a second, a minute's worth at once
    for _ in range(60):
        await budget.spend("platform")
    assert clock.slept == []
    await budget.spend("platform")  # the next token is a second away: worth the wait
    assert clock.slept == [pytest.approx(1.0)]
    slow = _budget(clock, 6)  # one request every 10 s: longer than a client waits
    for _ in range(6):
        await slow.spend("platform")
    with pytest.raises(RateLimited) as caught:
        await slow.spend("platform")
    assert "budget of 6 GitLab requests a minute ([gitlab] max_requests_per_minute)" in str(
        caught.value
    )
    assert caught.value.retry_after == pytest.approx(10.0)
    assert caught.value.retry_after > CLIENT_WAIT
    assert len(clock.slept) == 1


async def test_background_work_leaves_half_the_bucket_to_clients() -> None:
    clock = Clock()
    budget = _budget(clock, 60)
    for _ in range(30):
        await budget.spend("platform", background=True)
    assert clock.slept == []
    await budget.spend("platform", background=True)  # below half: waits for the refill
    assert clock.slept == [pytest.approx(1.0)]
    for _ in range(29):
        await budget.spend("platform")  # clients still have their half, at once
    assert len(clock.slept) == 1


async def test_the_bucket_and_a_429_are_shared_by_processes(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "gitlab-budget"
    worker, other = _budget(clock, 10, path), _budget(clock, 10, path)
    for _ in range(10):
        await worker.spend("platform")
    with pytest.raises(RateLimited):
        await other.spend("platform")  # the other process sees an empty bucket
    clock.now += 60
    with pytest.raises(RateLimited) as caught:
        async with worker.request("platform"):
            raise RateLimited("platform", "HTTP 429", 30.0)  # GitLab said: 30 s
    assert "GitLab's rate limit" in str(caught.value)
    prefetch = _budget(clock, 10, path, patient=True)
    with pytest.raises(RateLimited) as caught:
        await other.spend("platform")  # no request for 30 s, in every process
    assert caught.value.retry_after == pytest.approx(30.0)
    await prefetch.spend("platform")  # patient: waits it out rather than fail
    assert clock.slept == [pytest.approx(30.0)]
    worker.close()
    other.close()
    prefetch.close()


async def test_a_budget_file_that_cannot_be_opened_keeps_counting_in_the_process(
    tmp_path: Path,
) -> None:
    clock = Clock()
    (tmp_path / "not-a-directory").write_text("")
    budget = _budget(clock, 2, tmp_path / "not-a-directory" / "gitlab-budget")
    await budget.spend("platform")
    await budget.spend("platform")
    with pytest.raises(RateLimited):
        await budget.spend("platform")


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = time.time()
    assert retry_after("30") == 30
    assert retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 120)), now) == (
        pytest.approx(120, abs=1)
    )
    assert retry_after(None) == 60  # GitLab's limits count per minute
    assert retry_after("soon") == 60
    assert retry_after("0") == 1
    assert retry_after("999999") == 3600


@respx.mock
async def test_any_upstream_answering_429_is_rate_limited_not_missing() -> None:
    page = respx.get("https://index.example/simple/x/").respond(429, headers={"Retry-After": "7"})
    respx.get("https://index.example/files/x-1.0.tar.gz").respond(429)
    async with httpx2.AsyncClient() as client:
        upstream = Upstream(client)
        with pytest.raises(RateLimited) as caught:
            await upstream.get("public", "https://index.example/simple/x/")
        assert caught.value.retry_after == 7
        assert str(caught.value) == (
            "upstream public unavailable: HTTP 429 (its rate limit), retry after 7 s"
        )
        with pytest.raises(RateLimited):  # a file: not "not found", so no other source is tried
            async with upstream.stream("public", "https://index.example/files/x-1.0.tar.gz"):
                pass
    assert page.call_count == 1


async def test_a_queue_of_clients_waits_at_most_client_wait_in_all() -> None:
    """Waiters queue for the bucket in arrival order; each gives up once its own wait would pass
    CLIENT_WAIT, however many short waits it would have taken (a burst must drain, not starve)."""
    clock = Clock()
    budget = _budget(clock, 60)  # one request a second once the minute's worth is spent
    for _ in range(60):
        await budget.spend("s")
    outcomes = await asyncio.gather(*(budget.spend("s") for _ in range(20)), return_exceptions=True)
    taken = [o for o in outcomes if o is None]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    # the first few wait a second each, in turn, until the next one's wait would pass 5 s
    assert len(taken) == 5 and len(refused) == 15
    assert outcomes[:5] == [None] * 5
    assert sum(clock.slept) <= 5.0 + 1e-6
