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
import logging

from anyio._backends import _asyncio as anyio_asyncio

log = logging.getLogger("proxy.upstream")
try:
    from anyio._backends._asyncio import StreamProtocol as _Base  # private: see install()
except ImportError:  # an anyio without it: install() leaves its reads as they are
    _Base = None


class BoundedStreamProtocol(_Base or asyncio.Protocol):  # type: ignore[misc]
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
    bounded protocol. Idempotent. An anyio without that private class keeps its own (logged):
    downloads then read ahead as they did, correct but larger in memory."""
    if _Base is None:
        log.info("anyio has no StreamProtocol: upstream reads are not bounded (read_ahead)")
        return
    anyio_asyncio.StreamProtocol = BoundedStreamProtocol  # type: ignore[misc]
