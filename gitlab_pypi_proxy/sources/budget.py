"""The proxy's request budget for GitLab, shared by every process on one cache directory.

GitLab limits a token's requests per minute and answers 429 past that. Every GitLab source uses
the one [gitlab] token, so they share one token bucket of `[gitlab] max_requests_per_minute`,
held as a value the coordinator shares: every worker and a `prefetch` beside them spend from it,
and a 429 one of them sees stops all until its Retry-After has passed. Client requests may wait
for a token at most CLIENT_WAIT in all, queued in arrival order; past that, or during a
Retry-After, they fail at once with RateLimited (a stale page, or a 503 naming the limit).
Background work (PEP 700 details, the metadata warm-up) and a patient budget (prefetch) spend
only while the bucket is more than half full and wait as long as that takes: they yield to
clients and never fail for want of budget."""

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from gitlab_pypi_proxy.errors import RateLimited
from gitlab_pypi_proxy.storage.coordinator import ProcessValue, SharedValue

log = logging.getLogger("proxy.budget")

_STATE = struct.Struct("<3d")  # tokens, when they were counted, blocked until (Unix times)
CLIENT_WAIT = 5.0  # seconds a client request may wait for a token before it is refused

T = TypeVar("T")
State = tuple[float, float, float]


class Budget:
    def __init__(
        self,
        per_minute: int,
        shared: SharedValue | None = None,
        *,
        patient: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_minute, self.patient = per_minute, patient
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._reserve = min(self._capacity / 2, self._capacity - 1)  # left to client requests
        self._clock, self._sleep = clock, sleep
        # the bucket every process spends from (the coordinator's; else this process's own)
        self._shared = shared or ProcessValue()
        # In arrival order (asyncio's locks are fair): one waiter at a time asks the bucket.
        self._queues = {False: asyncio.Lock(), True: asyncio.Lock()}

    def close(self) -> None:
        self._shared.close()

    @asynccontextmanager
    async def request(self, source: str, *, background: bool = False) -> AsyncIterator[None]:
        """Spend one request to GitLab for `source`, then send it in the body; a RateLimited
        (GitLab's 429) raised there stops every request to GitLab until its Retry-After."""
        await self.spend(source, background=background)
        try:
            yield
        except RateLimited as exc:
            await asyncio.to_thread(self._block, exc.retry_after)
            log.warning(
                "GitLab answered 429 (rate limit) for source %s: no request to GitLab for %.0f s",
                source,
                exc.retry_after,
            )
            raise RateLimited(source, _gitlab_limit(exc.retry_after), exc.retry_after) from None

    def waits(self, background: bool = False) -> bool:
        """Does this kind of request wait out the budget and GitLab's 429 rather than fail?"""
        return background or self.patient

    async def spend(self, source: str, *, background: bool = False) -> None:
        """Take one request from the bucket. Raises RateLimited for a client request that
        cannot be sent soon; background and patient spending waits instead."""
        patient = self.waits(background)
        deadline = self._clock() + CLIENT_WAIT
        async with self._queues[patient]:
            while True:
                wait, blocked = await asyncio.to_thread(self._take, patient)
                if wait <= 0:
                    return
                if not patient and (blocked or self._clock() + wait > deadline):
                    reason = (
                        _gitlab_limit(wait)
                        if blocked
                        else f"the proxy's budget of {self.per_minute} GitLab requests a minute "
                        f"([gitlab] max_requests_per_minute) is spent, retry after {wait:.0f} s"
                    )
                    raise RateLimited(source, reason, wait)
                await self._sleep(wait)

    def _take(self, patient: bool) -> tuple[float, bool]:
        """(0, False) when a request was taken, else (seconds to wait, blocked by a 429)."""

        def take(tokens: float, now: float, until: float) -> tuple[State, tuple[float, bool]]:
            if now < until:
                return (tokens, now, until), (until - now, True)
            floor = self._reserve if patient else 0.0
            if tokens >= floor + 1:
                return (tokens - 1, now, until), (0.0, False)
            return (tokens, now, until), ((floor + 1 - tokens) / self._rate, False)

        return self._shared.update(self._change(take))

    def _block(self, seconds: float) -> None:
        def block(tokens: float, now: float, until: float) -> tuple[State, None]:
            return (tokens, now, max(until, now + seconds)), None

        self._shared.update(self._change(block))

    def _change(
        self, step: Callable[[float, float, float], tuple[State, T]]
    ) -> Callable[[bytes | None], tuple[bytes, T]]:
        """`step` over the bucket refilled up to now, as an update of the shared value."""

        def change(data: bytes | None) -> tuple[bytes, T]:
            now = self._clock()
            if data is not None and len(data) == _STATE.size:
                tokens, counted, until = _STATE.unpack(data)
            else:  # the first use: a full bucket
                tokens, counted, until = self._capacity, now, 0.0
            refilled = min(self._capacity, tokens + max(0.0, now - counted) * self._rate)
            state, result = step(refilled, now, until)
            return _STATE.pack(*state), result

        return change


def _gitlab_limit(wait: float) -> str:
    return f"GitLab's rate limit (HTTP 429 Too Many Requests), retry after {wait:.0f} s"
