"""The upstream connection pool, watched: a pool that stops getting requests out is noticed,
reported and replaced.

Every upstream request of a worker goes through one httpx2 pool. `WatchedTransport` knows, per
request, whether it waits for a connection or holds one, and when anything last moved (a
connection, an answer, a body chunk, a failure: a timeout is progress too, the upstream's fault,
which the upstreams' health reports). A request that waited longer than the pool timeout while
nothing moved is a stall: logged once, counted, reported (`/readyz` not ready), and the pool is
replaced at once and the old one closed once its last request ends. A stall can only come from
the pool's own state, so nothing that works is lost by the swap, and `/healthz` stays green, so
no liveness probe would restart it. The watchdog (once a second) also closes idle connections
that expired or that the upstream closed. Why: docs/architecture.md, "The watched pool"."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import TaskSet
from gitlab_pypi_proxy.request_id import detached
from gitlab_pypi_proxy.sources.upstream_transport import PoolTransport

if TYPE_CHECKING:
    from gitlab_pypi_proxy.sources.upstream import UpstreamObserver

log = logging.getLogger("proxy.upstream")

_TICK = 1.0  # seconds between the watchdog's looks (shorter for a timeout under 4 s)


@dataclass(eq=False)
class _Pool:
    transport: httpx2.AsyncBaseTransport
    waiting: dict["_Ticket", None] = field(default_factory=dict)  # oldest first
    holding: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or self.holding > 0


@dataclass(eq=False)
class _Ticket:
    """One request's place in a pool: waiting for a connection, then holding one, then done."""

    pool: _Pool
    began: float
    state: str = "waiting"


class _WatchedStream(httpx2.AsyncByteStream):
    """A response body that reports each chunk as progress and its closing as the request's end."""

    def __init__(
        self, inner: httpx2.AsyncByteStream, moved: Callable[[], None], done: Callable[[], None]
    ) -> None:
        self._inner, self._moved, self._done = inner, moved, done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._moved()
                yield chunk
        except httpx2.TransportError:
            self._moved()
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._done()


class WatchedTransport(httpx2.AsyncBaseTransport):
    """A pool made by `factory`, watched for stalls and replaced by a new one when it stalls."""

    def __init__(
        self,
        factory: Callable[[], httpx2.AsyncBaseTransport],
        timeout: float,
        *,
        name: str = "direct",
        tick: float = _TICK,
        observer: "UpstreamObserver | None" = None,
    ) -> None:
        self._factory, self.timeout, self.name = factory, timeout, name
        self._observer = observer
        self._tick = min(tick, timeout / 4)
        self._pool = _Pool(factory())
        self._retired: list[_Pool] = []
        self._closing = TaskSet(log, f"closing a replaced upstream pool ({name})")
        self._watchdog: asyncio.Task[None] | None = None
        self.moved_at = time.monotonic()
        self.stalled_at: float | None = None  # the latest sign of a stall, while stalled
        self.reason = ""

    @property
    def stalled(self) -> bool:
        return self.stalled_at is not None

    @property
    def waiting(self) -> int:
        return len(self._pool.waiting) + sum(len(p.waiting) for p in self._retired)

    @property
    def holding(self) -> int:
        return self._pool.holding + sum(p.holding for p in self._retired)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._watchdog is None:
            self._watchdog = detached(self._watch())  # started by a request, for all of them
        pool = self._pool
        ticket = _Ticket(pool, time.monotonic())
        pool.waiting[ticket] = None
        metrics.UPSTREAM_WAITING.inc()
        earlier = request.extensions.get("trace")

        async def trace(event: str, info: dict[str, Any]) -> None:
            # httpcore traces a request only once it is on a connection (connect or send)
            self._connected(ticket)
            if earlier is not None:
                await earlier(event, info)

        request.extensions["trace"] = trace
        try:
            response = await pool.transport.handle_async_request(request)
        except httpx2.PoolTimeout:
            self._done(ticket)
            self._pool_timeout(ticket)
            raise
        except httpx2.TransportError:
            self._done(ticket)
            self._moved()
            raise
        except BaseException:
            self._done(ticket)
            raise
        self._connected(ticket)  # a transport that traces nothing: it answered, so it had one
        self._moved()
        stream = response.stream
        if response.is_closed or not isinstance(stream, httpx2.AsyncByteStream):
            self._done(ticket)  # read whole already (a mock's answer): the request ends here
        else:
            response.stream = _WatchedStream(stream, self._moved, lambda: self._done(ticket))
        return response

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for pool in [self._pool, *self._retired]:
            await pool.transport.aclose()
        self._retired.clear()
        await self._closing.settled()

    # --- bookkeeping --------------------------------------------------------------------------

    def _connected(self, ticket: _Ticket) -> None:
        if ticket.state != "waiting":
            return
        ticket.state = "holding"
        del ticket.pool.waiting[ticket]
        ticket.pool.holding += 1
        metrics.UPSTREAM_WAITING.dec()
        metrics.UPSTREAM_HOLDING.inc()
        self._moved()

    def _done(self, ticket: _Ticket) -> None:
        pool = ticket.pool
        if ticket.state == "waiting":
            del pool.waiting[ticket]
            metrics.UPSTREAM_WAITING.dec()
        elif ticket.state == "holding":
            pool.holding -= 1
            metrics.UPSTREAM_HOLDING.dec()
        ticket.state = "done"
        if pool in self._retired and not pool.busy:
            self._retire(pool)

    def _moved(self) -> None:
        self.moved_at = time.monotonic()
        if self.stalled_at is not None and self.moved_at > self.stalled_at:
            self._recovered("requests are getting out again")

    def _pool_timeout(self, ticket: _Ticket) -> None:
        metrics.UPSTREAM_POOL_TIMEOUTS.inc()
        if self.moved_at <= ticket.began:
            self._stall(
                ticket.pool,
                f"a request waited {self.timeout:g}s for a connection to an upstream "
                "(pool timeout) while no other request moved",
            )

    def _stall(self, pool: _Pool, reason: str) -> None:
        first = self.stalled_at is None
        self.stalled_at, self.reason = time.monotonic(), reason
        if first:
            log.error("upstream connection pool (%s) stalled: %s", self.name, reason)
            metrics.UPSTREAM_POOL_STALLED.set(1)
            self._observe(reason)
        if pool is self._pool:
            self._replace()

    def _recovered(self, how: str) -> None:
        self.stalled_at, self.reason = None, ""
        log.warning("upstream connection pool (%s) no longer stalled: %s", self.name, how)
        metrics.UPSTREAM_POOL_STALLED.set(0)
        self._observe(None)

    def _observe(self, stalled: str | None) -> None:
        if self._observer is not None:
            self._observer.pool_stalled(self.name, stalled)

    def _replace(self) -> None:
        old, self._pool = self._pool, _Pool(self._factory())
        metrics.UPSTREAM_POOL_REPLACEMENTS.inc()
        log.error(
            "replaced the upstream connection pool (%s); the old one closes after its %d "
            "request(s)",
            self.name,
            len(old.waiting) + old.holding,
        )
        self._retired.append(old)
        if not old.busy:
            self._retire(old)

    def _retire(self, pool: _Pool) -> None:
        self._retired.remove(pool)
        self._closing.spawn(pool.transport.aclose())

    # --- the watchdog -------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                self._look()
                await _close_idle_expired(self._pool.transport)
            except Exception as exc:  # the watchdog must outlive anything it looks at
                log.warning("upstream pool watchdog: %s: %s", type(exc).__name__, exc)

    def _look(self) -> None:
        now = time.monotonic()
        pool = self._pool
        if pool.waiting:
            oldest = next(iter(pool.waiting)).began
            if now - max(oldest, self.moved_at) > self.timeout:
                self._stall(
                    pool,
                    f"{len(pool.waiting)} request(s) waited over {self.timeout:g}s for a "
                    "connection to an upstream while no other request moved",
                )
        if self.stalled_at is not None:
            if now - self.stalled_at > self.timeout:
                self._recovered(f"no request waited for a connection in {self.timeout:g}s")
            else:
                self._observe(self.reason)  # keeps the shared state fresh


async def _close_idle_expired(transport: httpx2.AsyncBaseTransport) -> None:
    """Close the pool's idle connections that expired or that the upstream closed (through
    httpcore2's public pool and connection interface). Closing an idle connection is safe even if
    a queued request was just given it: that request finds it closed and asks for another."""
    if not isinstance(transport, PoolTransport):
        return  # a test's transport: no connections
    for connection in transport.pool.connections:
        if connection.is_connected() and connection.is_idle() and connection.has_expired():
            await connection.aclose()
