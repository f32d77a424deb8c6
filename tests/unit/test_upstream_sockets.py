"""The upstream connections' sockets: a host's next address is tried while an earlier one still
hangs, when every address fails the error that says the most is the one reported, and a closed
connection holds no buffers."""

import asyncio
import errno
import gc
import socket
import ssl
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpcore2
import pytest
import uvloop

from gitlab_pypi_proxy.sources import upstream_sockets
from gitlab_pypi_proxy.sources.upstream_sockets import Backend
from tests.tls import make_certificates
from tests.waiting import async_wait_until

CHUNK = 64 * 1024


@contextmanager
def _hanging_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection to it gets no answer."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        waiting = []
        try:
            for _ in range(4):
                client = socket.socket()
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", port))
                waiting.append(client)
            yield port
        finally:
            for client in waiting:
                client.close()


@contextmanager
def _listening() -> Iterator[socket.socket]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server


async def test_the_next_address_is_tried_while_the_first_hangs() -> None:
    with _hanging_port() as hanging, _listening() as server:
        addresses = [
            (socket.AF_INET, ("127.0.0.1", hanging)),
            (socket.AF_INET, server.getsockname()),
        ]
        async with asyncio.timeout(10):  # far below the hanging attempt's own (minutes)
            sock = await upstream_sockets._first_connected(addresses, None)
        with sock:
            assert sock.getpeername() == server.getsockname()


async def test_a_host_whose_every_address_refuses_is_reported_as_refusing() -> None:
    with _listening() as server:
        port = server.getsockname()[1]
    addresses = [(socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET, ("127.0.0.2", port))]
    with pytest.raises(ConnectionRefusedError):
        await upstream_sockets._first_connected(addresses, None)
    with pytest.raises(httpcore2.ConnectError) as caught:
        await Backend().connect_tcp("127.0.0.1", port, timeout=10)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_no_route_for_a_family_says_less_than_a_refusal() -> None:
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert upstream_sockets._failure([unreachable, refused]) is refused
    assert upstream_sockets._failure([unreachable]) is unreachable


def test_a_closed_tls_connection_lets_go_of_its_buffers(tmp_path: Path) -> None:
    """A pool keeps a closed connection's object until its next request: what the connection
    held (uvloop's TLS read buffer, 256 KiB) must go with the close, not with the object."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        freed = runner.run(_closed_tls_connections(tmp_path, 8))
    assert freed > 8 * 200 * 1024, freed


async def _closed_tls_connections(tmp_path: Path, count: int) -> int:
    """The memory Python traced that `count` TLS streams let go of when closed (each kept)."""
    certificates = make_certificates(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(*certificates.server)
    client_side = ssl.create_default_context(cafile=str(certificates.ca))
    body = b"x" * 2**20

    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    streams = []
    tracemalloc.start()
    try:
        for _ in range(count):
            plain = await Backend().connect_tcp("127.0.0.1", port, timeout=10)
            stream = await plain.start_tls(client_side, "127.0.0.1", timeout=10)
            received = 0
            while chunk := await stream.read(CHUNK, timeout=10):
                received += len(chunk)
            assert received == len(body)
            streams.append(stream)  # as the pool keeps it
        held = tracemalloc.get_traced_memory()[0]
        for stream in streams:
            await stream.aclose()
        await asyncio.sleep(0)  # the transports' close callbacks
        await async_wait_until(lambda: all(s.reader.ended for s in streams), "closed")
        gc.collect()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        server.close()
        await server.wait_closed()
    return freed
