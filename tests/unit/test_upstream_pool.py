"""gitlab_pypi_proxy.sources.upstream_pool: a pool that stops getting requests out is noticed,
reported by /readyz, replaced; a busy pool that keeps moving is left alone; idle connections the
upstream closed are closed rather than left in CLOSE-WAIT."""

import asyncio
import json
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from tempfile import gettempdir
from types import SimpleNamespace

import httpx2
import psutil
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.routing import Route

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.http import health
from gitlab_pypi_proxy.sources.upstream import make_client
from gitlab_pypi_proxy.sources.upstream_health import UpstreamHealth
from gitlab_pypi_proxy.sources.upstream_pool import WatchedTransport
from gitlab_pypi_proxy.sources.upstream_transport import pool_transport
from tests.unit.asgi import asgi_client
from tests.waiting import async_wait_until

TIMEOUT = 0.4  # the watchdog looks every TIMEOUT / 4
_P = "gitlab_pypi_proxy_"


class NeverAnswers(httpx2.AsyncBaseTransport):
    """A wedged pool: every request waits for a connection forever."""

    def __init__(self) -> None:
        self.closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True


class PoolTimesOut(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raise httpx2.PoolTimeout("no connection available", request=request)


class Body(httpx2.AsyncByteStream):
    """A body that arrives as a stream, as a real pool's does."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"o"
        yield b"k"


def answers() -> httpx2.MockTransport:
    return httpx2.MockTransport(lambda request: httpx2.Response(200, stream=Body()))


class Pools:
    """A factory handing out the given transports in turn, then working ones."""

    def __init__(self, *first: httpx2.AsyncBaseTransport) -> None:
        self.queue = list(first)
        self.made: list[httpx2.AsyncBaseTransport] = []

    def __call__(self) -> httpx2.AsyncBaseTransport:
        made = self.queue.pop(0) if self.queue else answers()
        self.made.append(made)
        return made


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(_P + name) or 0.0


async def readiness(observer: UpstreamHealth) -> tuple[int, dict]:
    """/readyz of a proxy whose cache could serve (one cached page) and whose source is up, with
    the health the transport reports to."""
    services = SimpleNamespace(
        config=SimpleNamespace(cache=SimpleNamespace(offline=False, directory=Path(gettempdir()))),
        source_names=["platform"],
        stores=SimpleNamespace(pages=[object()], shared=()),
        health=observer,
    )
    app = Starlette(routes=[Route("/readyz", health.readyz)])
    app.state.services = services
    async with asgi_client(app, "127.0.0.1") as client:
        response = await client.get("/readyz")
    return response.status_code, response.json()


async def test_a_pool_that_never_answers_is_reported_stalled_and_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.upstream")
    replaced = sample("upstream_pool_replacements_total")
    waiting = sample("upstream_requests_waiting")
    wedged = NeverAnswers()
    pools = Pools(wedged)
    observer = UpstreamHealth()
    transport = WatchedTransport(pools, TIMEOUT, observer=observer)
    async with httpx2.AsyncClient(transport=transport) as client:
        stuck = asyncio.ensure_future(client.get("https://user:secret@gitlab.example/api/v4/x"))
        await async_wait_until(lambda: transport.stalled, "the stall to be noticed")
        assert transport.waiting == 1 and sample("upstream_requests_waiting") == waiting + 1
        assert sample("upstream_pool_stalled") == 1
        assert sample("upstream_pool_replacements_total") == replaced + 1
        assert len(pools.made) == 2 and not wedged.closed  # its request has not ended yet
        status, body = await readiness(observer)
        assert status == 503 and body["ready"] is False
        assert body["mode"].startswith("not ready: cannot get requests out to the upstreams: ")
        assert body["upstream_pool"]["stalled"] is True
        assert "waited over 0.4s for a connection" in body["upstream_pool"]["reason"]

        answered = await client.get("https://gitlab.example/api/v4/y")  # on the new pool
        assert answered.status_code == 200
        assert not transport.stalled and sample("upstream_pool_stalled") == 0
        status, body = await readiness(observer)
        assert status == 200 and body["mode"] == "online"

        stuck.cancel()
        await async_wait_until(
            lambda: wedged.closed, "the old pool to close once its request ended"
        )
        assert transport.waiting == 0 and sample("upstream_requests_waiting") == waiting
    stalls = [r for r in caplog.records if ") stalled:" in r.getMessage()]
    assert [r.levelname for r in stalls] == ["ERROR"]  # once per state change
    assert [r.levelname for r in caplog.records if "no longer stalled" in r.getMessage()] == [
        "WARNING"
    ]
    assert all(
        "secret" not in r.getMessage() and "gitlab.example" not in r.getMessage()
        for r in caplog.records
    )


async def test_a_pool_timeout_while_nothing_moves_is_a_stall() -> None:
    timeouts = sample("upstream_pool_timeouts_total")
    replaced = sample("upstream_pool_replacements_total")
    transport = WatchedTransport(Pools(PoolTimesOut()), TIMEOUT)
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.PoolTimeout):
            await client.get("https://gitlab.example/")
        assert transport.stalled and "pool timeout" in transport.reason
        assert sample("upstream_pool_timeouts_total") == timeouts + 1
        assert sample("upstream_pool_replacements_total") == replaced + 1
        assert (await client.get("https://gitlab.example/")).status_code == 200
        assert not transport.stalled


async def test_a_busy_pool_that_keeps_moving_is_not_stalled() -> None:
    """One request waits far longer than the timeout, but others keep getting answers."""

    class OneNeverAnswers(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.url.path == "/slow":
                await asyncio.Event().wait()
            return httpx2.Response(200, stream=Body())

    replaced = sample("upstream_pool_replacements_total")
    transport = WatchedTransport(Pools(OneNeverAnswers()), TIMEOUT)
    async with httpx2.AsyncClient(transport=transport) as client:
        slow = asyncio.ensure_future(client.get("https://gitlab.example/slow"))
        began = time.monotonic()
        while time.monotonic() - began < 4 * TIMEOUT:  # the watchdog looks about 16 times
            assert (await client.get("https://gitlab.example/fast")).status_code == 200
            await asyncio.sleep(TIMEOUT / 8)  # paces the other requests, synchronises nothing
        assert transport.waiting == 1 and not transport.stalled
        assert sample("upstream_pool_replacements_total") == replaced
        slow.cancel()


async def test_requests_are_counted_while_waiting_and_while_holding_a_connection() -> None:
    active = sample("upstream_requests_active")
    transport = WatchedTransport(Pools(), TIMEOUT)
    async with httpx2.AsyncClient(transport=transport) as client:
        async with client.stream("GET", "https://gitlab.example/file") as response:
            assert (transport.waiting, transport.holding) == (0, 1)
            assert sample("upstream_requests_active") == active + 1
            assert await response.aread() == b"ok"
        assert (transport.waiting, transport.holding) == (0, 0)
        assert sample("upstream_requests_active") == active


async def _serve_once_then_hang_up(
    hang_up: asyncio.Event,
) -> tuple[asyncio.AbstractServer, int]:
    """A server that answers one keep-alive request, then closes the connection on `hang_up`
    (as a server's keep-alive timeout would)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await hang_up.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _states_to(port: int) -> list[str]:
    return [
        c.status
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port
    ]


async def test_idle_connections_the_upstream_closed_are_not_left_in_close_wait() -> None:
    hang_up = asyncio.Event()
    server, port = await _serve_once_then_hang_up(hang_up)
    ssl_context = httpx2.create_ssl_context()
    transport = WatchedTransport(  # it looks every 0.5 s
        lambda: pool_transport(httpx2.Limits(), ssl_context), 2.0
    )
    try:
        async with httpx2.AsyncClient(transport=transport) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
            assert _states_to(port) == ["ESTABLISHED"]  # idle in the pool, kept alive
            hang_up.set()
            await async_wait_until(
                lambda: not _states_to(port), "the half-closed socket to be closed"
            )
    finally:
        server.close()
        await server.wait_closed()


async def test_the_watchdog_closes_idle_connections_past_their_keep_alive_expiry() -> None:
    """The watchdog holds the pool it built: an idle connection kept past its expiry is closed
    without waiting for the next request to notice."""
    hang_up = asyncio.Event()  # never set: the server would keep the connection for ever
    server, port = await _serve_once_then_hang_up(hang_up)
    limits, ssl_context = httpx2.Limits(keepalive_expiry=0.5), httpx2.create_ssl_context()
    transport = WatchedTransport(lambda: pool_transport(limits, ssl_context), 2.0)
    try:
        async with httpx2.AsyncClient(transport=transport) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
            assert _states_to(port) == ["ESTABLISHED"]
            await async_wait_until(lambda: not _states_to(port), "the expired connection closed")
    finally:
        hang_up.set()
        server.close()
        await server.wait_closed()


def test_a_stall_shared_by_a_worker_that_is_gone_does_not_count(tmp_path: Path) -> None:
    now = time.time()
    for pid, written in ((1, now), (2, now - 60)):
        snapshot = {"written": written, "stalled": f"worker {pid} stalled", "sources": {}}
        (tmp_path / f"{pid}.json").write_text(json.dumps(snapshot))
    (tmp_path / f"{os.getpid()}.json").write_text(json.dumps(snapshot))  # this one: in memory
    _, stalls = UpstreamHealth(tmp_path).read_shared()
    assert stalls == ["worker 1 stalled"]


async def test_the_environments_http_proxy_is_still_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """make_client brings its own transport, which turns httpx2's own reading of HTTP_PROXY off:
    it mounts the environment's proxies itself (each pool watched too)."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(line), line))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(forward, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "direct.invalid")
    try:
        async with make_client(5.0) as client:
            answer = await client.get("http://gitlab.invalid/api/v4/projects")
            assert answer.text == "GET http://gitlab.invalid/api/v4/projects HTTP/1.1"
            with pytest.raises(httpx2.ConnectError):  # NO_PROXY: asked directly, no such host
                await client.get("http://direct.invalid/")
    finally:
        server.close()
        await server.wait_closed()


def test_the_live_gauges_of_a_worker_that_died_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that uvicorn restarts must not leave its last 'stalled' or 'waiting' summed in."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    for pid in (dead.pid, os.getpid()):
        (tmp_path / f"gauge_livemax_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead.pid}.db").write_bytes(b"")  # counts stay: they happened
    metrics.forget_dead_workers()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead.pid}.db", f"gauge_livemax_{os.getpid()}.db"]
    )
