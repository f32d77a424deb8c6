"""A response's small writes go out together, in order, and nothing waits past one loop pass; a
request head that does not come whole within the header timeout gets its connection closed."""

import asyncio
import socket
import threading
from typing import Any

from prometheus_client import REGISTRY

from gitlab_pypi_proxy.internals.server_protocol import (
    HELD_BYTES,
    CoalescedTransport,
    CoalescingHttpTools,
)
from tests.servers import serve
from tests.waiting import async_wait_until, wait_until


class RecordingTransport:
    """The calls a transport got, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, lines: list[bytes]) -> None:
        self.calls.append(("writelines", list(lines)))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default


async def test_headers_and_body_go_out_in_one_write() -> None:
    transport = RecordingTransport()
    coalesced = CoalescedTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalesced.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
    coalesced.write(b"body")
    assert transport.calls == []  # held until the response is complete or the pass ends
    coalesced.flush()
    expected = [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n", b"body"]
    assert transport.calls == [("writelines", expected)]


async def test_what_is_held_goes_out_when_the_loop_pass_ends() -> None:
    transport = RecordingTransport()
    coalesced = CoalescedTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalesced.write(b"headers of a body still to come")
    await async_wait_until(lambda: transport.calls, "the held headers written")
    assert transport.calls == [("writelines", [b"headers of a body still to come"])]


async def test_a_large_write_is_neither_held_nor_copied_and_keeps_its_order() -> None:
    transport = RecordingTransport()
    coalesced = CoalescedTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    big = bytes(HELD_BYTES + 1)
    coalesced.write(big)
    assert transport.calls == [("write", big)] and transport.calls[0][1] is big
    coalesced.write(b"headers")
    coalesced.write(big)  # the held headers first, then the body, in one call
    assert transport.calls[1] == ("writelines", [b"headers", big])
    assert transport.calls[1][1][1] is big


async def test_closing_sends_what_was_held_first() -> None:
    transport = RecordingTransport()
    coalesced = CoalescedTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalesced.write(b"last words")
    coalesced.close()
    assert transport.calls == [("writelines", [b"last words"]), ("close", None)]


def _read_until(sock: socket.socket, marker: bytes, have: bytes = b"") -> bytes:
    while marker not in have:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}; got {have!r}"
        have += chunk
    return have


def test_a_real_server_streams_headers_before_a_late_body_and_answers_in_order() -> None:
    """Through uvicorn: headers reach the client while the body is still awaited (nothing held
    past a loop pass), and keep-alive answers arrive whole and in order."""
    release = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["path"] == "/late":
            await asyncio.to_thread(release.wait, 20)
        await send({"type": "http.response.body", "body": body})

    with (
        serve(app, http=CoalescingHttpTools) as server,  # type: ignore[arg-type]
        socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock,
    ):
        sock.sendall(b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n")
        head = _read_until(sock, b"\r\n\r\n")  # would time out if the headers were held
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5" in head
        assert head.endswith(b"\r\n\r\n")
        release.set()
        assert _read_until(sock, b"/late", head).endswith(b"\r\n\r\n/late")
        sock.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /bb HTTP/1.1\r\nhost: x\r\n\r\n")
        both = _read_until(sock, b"/bb")
        assert both.count(b"HTTP/1.1 200 OK") == 2
        assert both.index(b"\r\n\r\n/a") < both.index(b"\r\n\r\n/bb")


class QuickHeads(CoalescingHttpTools):
    header_timeout = 0.3


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (each read bounded by the socket's
    timeout)."""
    have = b""
    while chunk := sock.recv(65536):
        have += chunk
    return have


class SlowApp:
    """Answers with the request's path; /slow only once `release` is set."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        if scope["path"] == "/slow":
            await asyncio.to_thread(self.release.wait, 20)
        body = scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _cut_count() -> float:
    return REGISTRY.get_sample_value("gitlab_pypi_proxy_request_head_timeouts_total") or 0.0


def test_a_head_that_does_not_come_whole_in_time_gets_408_and_an_idle_connection_is_closed() -> (
    None
):
    app = SlowApp()
    with serve(app, http=QuickHeads) as server:  # type: ignore[arg-type]
        address = ("127.0.0.1", server.port)
        with socket.create_connection(address, timeout=20) as partial:
            partial.sendall(b"GET /never HTTP/1.1\r\nhost: x\r\nx-drip: a")
            answer = _read_to_end(partial)
        with socket.create_connection(address, timeout=20) as idle:
            assert _read_to_end(idle) == b""  # nothing came: closed without an answer
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\nno whole request head within 0.3 s\n")
    assert app.paths == []  # the app never saw the half request


def test_the_deadline_ends_with_the_head_and_each_later_request_gets_its_own() -> None:
    """An answer slower than the header timeout is not cut, the connection serves the next
    request, and a later head that stalls is cut in turn. The sign that the deadline has passed
    is another connection, made after the head, being cut."""
    app = SlowApp()
    cuts = _cut_count()
    with (
        serve(app, http=QuickHeads) as server,  # type: ignore[arg-type]
        socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock,
    ):
        sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        wait_until(lambda: app.paths == ["/slow"], "the app to get the request")
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as later:
            assert _read_to_end(later) == b""
        app.release.set()
        assert _read_until(sock, b"/slow").startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _read_until(sock, b"/next").startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"GET /stalled HTTP/1.1\r\n")
        assert _read_to_end(sock).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert app.paths == ["/slow", "/next"]
    assert _cut_count() == cuts + 2


def test_a_late_pipelined_head_closes_the_connection_after_the_answer_under_way() -> None:
    app = SlowApp()
    with (
        serve(app, http=QuickHeads) as server,  # type: ignore[arg-type]
        socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock,
    ):
        sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\nGET /pipelined HTTP/1.1\r\n")
        wait_until(lambda: app.paths == ["/slow"], "the app to get the request")
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as later:
            assert _read_to_end(later) == b""  # the pipelined head's deadline has passed too
        app.release.set()
        answer = _read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n/slow")
    assert app.paths == ["/slow"]


class Hooked(CoalescingHttpTools):
    """Notes each of uvicorn's hooks the protocol builds on as uvicorn calls it."""

    called: list[str] = []  # noqa: RUF012 (one server per test: the class is the record)
    read: list[object] = []  # noqa: RUF012

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.called.append("connection_made")
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.called.append("connection_lost")
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self.called.append("on_message_begin")
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.called.append("on_headers_complete")
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self.called.append("on_response_complete")
        cycle = self.cycle
        self.read[:] = [cycle.response_complete, cycle.keep_alive, self.client, self.loop]
        super().on_response_complete()


def test_uvicorn_calls_every_hook_the_protocol_builds_on() -> None:
    """uvicorn's internals as server_protocol.py uses them: each hook called, in order, with the
    attributes it reads (this fails on a uvicorn that renamed or dropped one)."""
    app = SlowApp()
    with (
        serve(app, http=Hooked) as server,  # type: ignore[arg-type]
        socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock,
    ):
        sock.sendall(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _read_until(sock, b"/one").startswith(b"HTTP/1.1 200 OK\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert _read_to_end(sock) == b""  # the server closes its side
        wait_until(lambda: "connection_lost" in Hooked.called, "the connection to end")
    assert Hooked.called == [
        "connection_made",
        "on_message_begin",
        "on_headers_complete",
        "on_response_complete",
        "connection_lost",
    ]
    complete, keep_alive, client, loop = Hooked.read
    assert complete is True and keep_alive is True
    assert client[0] == "127.0.0.1" and isinstance(loop, asyncio.AbstractEventLoop)
