"""A bound on what an upstream connection reads ahead of its reader.

httpx2 reads sockets through anyio, whose asyncio stream protocol queues every chunk the event
loop hands it and pauses the transport only once its reader has been woken. Under uvloop that is
too late: libuv reads a readable socket up to 32 times (256 KiB each) in one go, so a fast
upstream put up to 8 MiB in the queue of every file download while the download waited on its
disk write (the 1 GiB download of the bench's scenario 5: +10 MiB in one worker). Here the
protocol pauses the transport as soon as a chunk waits unread; anyio's reader resumes it once
the queue is empty, as it does already, so no byte is lost or reordered.
"""

import asyncio

from anyio._backends import _asyncio as anyio_asyncio


class BoundedStreamProtocol(anyio_asyncio.StreamProtocol):
    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # a chunk waits unread: no more until the reader has taken it
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()


def install() -> None:
    """Every anyio TCP connection made from now on in this process (only httpx2's are) uses the
    bounded protocol. Idempotent."""
    anyio_asyncio.StreamProtocol = BoundedStreamProtocol  # type: ignore[misc]
