"""The sockets of the upstream connections: TCP and TLS over asyncio, given to httpcore2's pools
through its public network-backend interface, each reading at most one chunk ahead of its reader.

httpcore2's default backend (anyio) pauses a transport only once its reader has been woken, and
under uvloop a fast upstream piles megabytes into the queue of a download that waits on its disk
write. Here the protocol pauses as soon as a chunk waits unread and resumes once it is taken: no
byte lost or reordered, one chunk held per connection. Connecting tries every address, IPv6 and
IPv4 interleaved, a new attempt every STAGGER seconds (RFC 8305), because uvloop's
`create_connection` has no `happy_eyeballs_delay`: a broken IPv6 route costs a quarter second,
not the connect timeout. Failures are httpcore2's exceptions with the OS or TLS error as their
cause, which gitlab_pypi_proxy.sources.upstream reads to say why."""

import asyncio
import errno
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from itertools import zip_longest
from typing import Any

import httpcore2

STAGGER = 0.25  # seconds between connection attempts to a host's addresses
# An address of a family this machine has no route for: another error says more.
_UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


class _Reader(asyncio.Protocol):
    """A connection's received bytes, at most one chunk of them unread at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.offset = 0  # of the next unread byte in chunks[0]
        self.ended = False  # no more bytes will come (end of stream, or the connection lost)
        self.error: BaseException | None = None  # what the connection was lost with
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()  # until the reader has taken this chunk
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self.ended = True
        self._wake_reader()
        return None  # the transport closes: httpcore never half-closes a connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended, self.error = True, exc
        self.transport = None  # its buffers go with it (see Stream.aclose)
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._readable = self._readable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readable(self) -> None:
        if not self.chunks and not self.ended:
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable

    async def writable(self) -> None:
        if self._writable is not None:
            await asyncio.shield(self._writable)

    def take(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` of the unread bytes (there are some); reading resumes once all
        are taken."""
        chunk = self.chunks[0]
        if self.offset == 0 and len(chunk) <= max_bytes:
            data = chunk
        else:
            data = chunk[self.offset : self.offset + max_bytes]
            self.offset += len(data)
        if data is chunk or self.offset >= len(chunk):
            self.chunks.popleft()
            self.offset = 0
        if not self.chunks and self.transport is not None and not self.ended:
            self.transport.resume_reading()
        return data


class _Closed:
    """A closed connection's transport, as a Stream sees it once it let go of the real one."""

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


_CLOSED = _Closed()


class Stream(httpcore2.AsyncNetworkStream):
    """One connection, as httpcore2 uses it."""

    def __init__(self, transport: asyncio.Transport, reader: _Reader) -> None:
        self.transport, self.reader = transport, reader

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        reader = self.reader
        try:
            async with asyncio.timeout(timeout):
                await reader.readable()
        except TimeoutError:
            raise httpcore2.ReadTimeout("no bytes arrived in time") from None
        if reader.chunks:
            return reader.take(max_bytes)
        if reader.error is not None:
            raise httpcore2.ReadError(str(reader.error)) from reader.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self.transport.is_closing():
            error = self.reader.error
            raise httpcore2.WriteError(str(error or "connection closed")) from error
        self.transport.write(buffer)
        try:
            async with asyncio.timeout(timeout):
                await self.reader.writable()
        except TimeoutError:
            raise httpcore2.WriteTimeout("the upstream took no bytes in time") from None

    async def aclose(self) -> None:
        """Close the connection and let go of it: a pool keeps a closed connection's object
        until its next request, and a TLS transport holds a read buffer of 256 KiB and its
        ciphertext backlog (megabytes after a big download), which would stay with it."""
        self.transport.close()
        self.transport = _CLOSED  # type: ignore[assignment]

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> "Stream":
        reader = self.reader
        if reader.chunks:  # bytes the TLS layer would never see: no stream to trust
            self.transport.close()
            raise httpcore2.ConnectError("bytes arrived before the TLS handshake")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    self.transport, reader, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self.transport.close()
            raise httpcore2.ConnectTimeout("TLS handshake timed out") from None
        except OSError as exc:  # ssl.SSLError included
            self.transport.close()
            raise httpcore2.ConnectError(str(exc)) from exc
        if tls is None:  # the connection closed during the handshake
            raise httpcore2.ConnectError("connection closed during the TLS handshake")
        reader.transport = tls  # type: ignore[assignment]
        return Stream(tls, reader)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the upstream closed, or wrote to
            return bool(self.reader.chunks) or self.reader.ended
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if name in ("ssl_object", "sockname", "peername", "socket"):
            return self.transport.get_extra_info(name)
        return None


class Backend(httpcore2.AsyncNetworkBackend):
    """Connections for httpcore2's pools (`network_backend=`)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> Stream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                sock = await _first_connected(_interleaved(infos), local_address)
                try:
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    transport, reader = await loop.create_connection(_Reader, sock=sock)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        return Stream(transport, reader)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> Stream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, reader = await loop.create_unix_connection(_Reader, path)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"connecting to {path} timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        return Stream(transport, reader)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _interleaved(infos: list[tuple[Any, ...]]) -> list[tuple[int, Any]]:
    """(family, address) of each resolved address, alternating families, in the resolver's
    order within each."""
    families: dict[int, list[tuple[int, Any]]] = {}
    for family, _, _, _, address in infos:
        families.setdefault(family, []).append((family, address))
    rows = zip_longest(*families.values())
    return [pair for row in rows for pair in row if pair is not None]


async def _first_connected(
    addresses: list[tuple[int, Any]], local_address: str | None
) -> socket.socket:
    """A socket connected to the first address that answers; attempts start STAGGER apart, or at
    once when the one before failed. Every other socket is closed."""
    if not addresses:
        raise OSError(errno.EADDRNOTAVAIL, "the host has no address")
    attempts: list[asyncio.Task[socket.socket]] = []
    winner: asyncio.Task[socket.socket] | None = None
    try:
        for number, (family, address) in enumerate(addresses, 1):
            attempts.append(asyncio.create_task(_connected(family, address, local_address)))
            last = number == len(addresses)
            running = {task for task in attempts if not task.done()}
            while running:
                done, running = await asyncio.wait(
                    running, timeout=None if last else STAGGER, return_when=asyncio.FIRST_COMPLETED
                )
                winner = next((task for task in done if task.exception() is None), None)
                if winner is not None:
                    return winner.result()
                if not last:
                    break  # the stagger passed, or an attempt failed: the next address now
        raise _failure([error for task in attempts if (error := task.exception()) is not None])
    finally:
        for task in attempts:
            if not task.done():
                task.cancel()  # it closes its socket
            elif task is not winner and not task.cancelled() and task.exception() is None:
                task.result().close()


async def _connected(family: int, address: Any, local_address: str | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if local_address is not None:
            sock.bind((local_address, 0))
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _failure(errors: list[BaseException]) -> BaseException:
    """What to report when every address failed: the first error that says more than "no route
    for this family" (an IPv6 address on a machine without IPv6), else the first."""
    telling = [e for e in errors if not (isinstance(e, OSError) and e.errno in _UNREACHABLE)]
    return (telling or errors)[0]
