"""uvicorn's HTTP protocol (httptools) as the proxy runs it (`uvicorn.run(http=...)`): a small
answer's status line, headers and body in one system call, and a deadline on every request head.

uvicorn writes the head and each body part with a `send()` of its own: two system calls for every
small answer (a memo hit, a redirect, an error). Here a small write is held until the next one or
the end of the loop's current pass, and goes out with it in one vectored write; a large write is
never held. uvicorn also has no timeout on a request head, so clients that send nothing, or a
byte now and then, hold a descriptor for ever. Here a head not whole within `[server]
header_timeout` closes the connection (a 408 when part of it came, silently when nothing did).

Internal names used, tested on uvicorn 0.55: `httptools_impl.HttpToolsProtocol`, its hooks
`connection_made`, `connection_lost`, `on_message_begin`, `on_headers_complete`,
`on_response_complete`, and its `loop`, `transport`, `client` and `cycle`.
tests/unit/test_server_protocol.py fails when uvicorn stops calling a hook."""

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gitlab_pypi_proxy import metrics

HELD_BYTES = 16 * 1024  # writes up to this size wait for the next one (a status line, headers)
CUT_LOG_SECONDS = 60.0  # at most one log line this often for the connections cut

log = logging.getLogger("proxy.http")


class CoalescedTransport:
    """The connection's transport, holding small writes until the next write or loop pass."""

    __slots__ = ("_held", "_loop", "_transport", "is_closing", "pause_reading", "resume_reading")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] | None = None
        # the calls made on every request go straight to the transport
        self.is_closing = transport.is_closing
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if len(data) > HELD_BYTES:
                self._transport.write(data)
                return
            self._held = [data]
            self._loop.call_soon(self.flush)
            return
        held.append(data)
        if len(data) > HELD_BYTES or sum(map(len, held)) > HELD_BYTES:
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.writelines(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CutLog:
    """One line for the first connection cut, then at most one per CUT_LOG_SECONDS, counting
    the ones in between: a flood of slow clients is a few lines, not one per connection."""

    def __init__(self) -> None:
        self.quiet_until = 0.0
        self.unlogged = 0

    def cut(self, client: tuple[str, int] | None, timeout: float) -> None:
        metrics.REQUEST_HEAD_TIMEOUTS.inc()
        now = time.monotonic()
        if now < self.quiet_until:
            self.unlogged += 1
            return
        more = f" (and {self.unlogged} more since the last such line)" if self.unlogged else ""
        log.info(
            "closed the connection of %s: no whole request head within %g s "
            "([server] header_timeout)%s",
            client[0] if client else "a client",
            timeout,
            more,
        )
        self.quiet_until, self.unlogged = now + CUT_LOG_SECONDS, 0


_CUTS = _CutLog()


def timeout_response(seconds: float) -> bytes:
    """A whole 408 answer that closes the connection."""
    body = f"no whole request head within {seconds:g} s\n".encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


class CoalescingHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescedTransport (`uvicorn.run(http=...)`): what
    was held goes out as soon as a response is complete; a request head gets `header_timeout`
    seconds."""

    # [server] header_timeout: set for the worker's connections at its start
    # (gitlab_pypi_proxy.internals.install_in_worker)
    header_timeout = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.coalesced = CoalescedTransport(transport, self.loop)
        super().connection_made(self.coalesced)  # type: ignore[arg-type]
        self.head_started = False  # a byte of a request head came, and not its end yet
        self.head_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout, self.head_too_slow
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_started = True
        if self.head_deadline is None:  # a later request on this connection: its own deadline
            self.head_deadline = self.loop.call_later(self.header_timeout, self.head_too_slow)

    def on_headers_complete(self) -> None:
        self._end_head_deadline()
        self.head_started = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self.coalesced.flush()
        super().on_response_complete()

    def _end_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def head_too_slow(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # the next head, pipelined, is late while an answer is still going out: the
            # connection closes once that answer is complete
            self.cycle.keep_alive = False
            return
        _CUTS.cut(self.client, self.header_timeout)
        if self.head_started:
            self.transport.write(timeout_response(self.header_timeout))
        self.transport.close()
