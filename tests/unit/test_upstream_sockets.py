"""The upstream connections' sockets: a host's next address is tried while an earlier one still
hangs, and when every address fails the error that says the most is the one reported."""

import asyncio
import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore2
import pytest

from gitlab_pypi_proxy.sources import upstream_sockets
from gitlab_pypi_proxy.sources.upstream_sockets import Backend


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
