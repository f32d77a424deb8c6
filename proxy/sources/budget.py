"""The proxy's request budget for GitLab, shared by every process on one cache directory.

GitLab limits the requests of a token per minute (gitlab.com: 2,000 API requests a minute) and
answers 429 with a Retry-After past that. Every GitLab source uses the one [gitlab] token, so they
share one budget of `[gitlab] max_requests_per_minute`: a token bucket that holds a minute's worth
and refills continuously. Its state lives in a small file under the cache directory, locked with
flock, so that every worker and a `prefetch` running beside them spend from the same bucket, and a
429 seen by one of them stops all of them until its Retry-After has passed.

Client requests may spend the whole bucket and wait briefly for a token, at most CLIENT_WAIT in
all; when the wait would be longer, or while GitLab's Retry-After runs, they fail at once with
RateLimited (the page is served stale, or the client gets a 503 naming the limit). Within a
process, requests queue for the bucket in arrival order (clients and background work apart), so
a burst of clients neither starves the first of them nor spins on the bucket's lock: after a
burst bigger than the budget, the queue drains within CLIENT_WAIT and a new request is answered.
Background work (PEP 700 details, the metadata
warm-up) and a patient budget (prefetch) spend only while the bucket is more than half full and
wait as long as that takes: they yield to client traffic and never fail for want of budget.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from proxy.errors import RateLimited

log = logging.getLogger("proxy.budget")

_STATE = struct.Struct("<3d")  # tokens, when they were counted, blocked until (Unix times)
CLIENT_WAIT = 5.0  # seconds a client request may wait for a token before it is refused


class Budget:
    def __init__(
        self,
        per_minute: int,
        path: Path | None = None,
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
        self._lock = threading.Lock()  # flock does not exclude this process's other threads
        self._memory = (self._capacity, clock(), 0.0)  # the state when there is no file
        self._fd = _open(path)
        # In arrival order (asyncio's locks are fair): one waiter at a time asks the bucket.
        self._queues = {False: asyncio.Lock(), True: asyncio.Lock()}

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

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
        with self._state() as (tokens, now, until):
            if now < until:
                return self._put(tokens, now, until, until - now, True)
            floor = self._reserve if patient else 0.0
            if tokens >= floor + 1:
                return self._put(tokens - 1, now, until, 0.0, False)
            return self._put(tokens, now, until, (floor + 1 - tokens) / self._rate, False)

    def _block(self, seconds: float) -> None:
        with self._state() as (tokens, now, until):
            self._put(tokens, now, max(until, now + seconds), 0.0, True)

    @contextlib.contextmanager
    def _state(self) -> Iterator[tuple[float, float, float]]:
        """The bucket refilled up to now, under both locks; `_put` writes it back."""
        with self._lock:
            fd = self._fd
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = self._clock()
                data = os.pread(fd, _STATE.size, 0) if fd is not None else b""
                tokens, counted, until = (
                    _STATE.unpack(data) if len(data) == _STATE.size else self._memory
                )
                refilled = tokens + max(0.0, now - counted) * self._rate
                yield min(self._capacity, refilled), now, until
            finally:
                if fd is not None and self._fd is not None:  # `_put` may have given it up
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _put(
        self, tokens: float, now: float, until: float, wait: float, blocked: bool
    ) -> tuple[float, bool]:
        self._memory = (tokens, now, until)
        if self._fd is not None:
            try:
                os.pwrite(self._fd, _STATE.pack(tokens, now, until), 0)
            except OSError as exc:  # a read-only or full disk: keep counting in this process
                log.warning("request budget kept per process from now on: %s", exc.strerror)
                os.close(self._fd)
                self._fd = None
        return wait, blocked


def _gitlab_limit(wait: float) -> str:
    return f"GitLab's rate limit (HTTP 429 Too Many Requests), retry after {wait:.0f} s"


def _open(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warning("request budget kept per process: cannot open %s: %s", path, exc.strerror)
        return None
