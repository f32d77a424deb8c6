"""uvicorn's HTTP protocol (httptools) with a response's status line, headers and body sent in
one system call where they come in one pass of the event loop.

uvicorn writes the status line and headers when the app sends `http.response.start`, then each
body part: two `send()` system calls for every small answer (a memo hit, a redirect, an error),
the costliest part of a warm page in the profile. Here a small write is held until the next one
or the end of the loop's current pass, whichever comes first, and what was held goes out with it
in one vectored write (uvloop's `writelines`). Nothing waits longer than one pass of the loop,
a large write is never held or copied, and closing the connection sends what was held first.
"""

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HELD_BYTES = 16 * 1024  # writes up to this size wait for the next one (a status line, headers)


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


class CoalescingHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescedTransport (`uvicorn.run(http=...)`): what
    was held goes out as soon as a response is complete."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.coalesced = CoalescedTransport(transport, self.loop)
        super().connection_made(self.coalesced)  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.coalesced.flush()
        super().on_response_complete()
