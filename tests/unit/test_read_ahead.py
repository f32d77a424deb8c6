"""An upstream connection reads at most a chunk ahead of its reader, under uvloop as the workers
run it: a fast upstream and a slow reader (a download waiting on its disk writes) do not pile
megabytes into the connection's read queue, and every byte still arrives in order."""

import asyncio
import hashlib
from typing import Any

import pytest
import uvloop

from gitlab_pypi_proxy.sources import upstream_sockets
from gitlab_pypi_proxy.sources.upstream import make_client
from tests.servers import serve
from tests.waiting import async_wait_until

CHUNK = 256 * 1024
CHUNKS = 96  # 24 MiB


def _chunk(number: int) -> bytes:
    return bytes([number % 251]) * CHUNK


class FastUpstream:
    """Sends CHUNKS chunks as fast as the socket takes them, counting what it handed over."""

    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", str(CHUNK * CHUNKS).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for number in range(CHUNKS):
            await send({"type": "http.response.body", "body": _chunk(number), "more_body": True})
            self.sent += CHUNK
        await send({"type": "http.response.body", "body": b""})


def test_a_slow_reader_of_a_fast_upstream_has_at_most_a_chunk_read_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queued: list[int] = []  # unread bytes of the connection after each arrival
    received = upstream_sockets._Reader.data_received

    def counting(self: Any, data: bytes) -> None:
        received(self, data)
        queued.append(sum(map(len, self.chunks)) - self.offset)

    monkeypatch.setattr(upstream_sockets._Reader, "data_received", counting)
    upstream = FastUpstream()

    async def download(url: str) -> str:
        digest, got = hashlib.sha256(), 0
        async with make_client(30) as client, client.stream("GET", url) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                got += len(chunk)
                await asyncio.to_thread(digest.update, chunk)  # as a download's disk write
                if got % (4 * 2**20) == 0 and got < CHUNK * CHUNKS:
                    # let the upstream fill the socket's buffers before the next read
                    ahead = min(got + 2**20, CHUNK * CHUNKS)
                    await async_wait_until(
                        lambda ahead=ahead: upstream.sent >= ahead, "the upstream a MiB ahead"
                    )
        assert got == CHUNK * CHUNKS
        return digest.hexdigest()

    with serve(upstream) as server, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        hexdigest = runner.run(download(f"{server.url}/big.whl"))

    expected = hashlib.sha256(b"".join(_chunk(n) for n in range(CHUNKS))).hexdigest()
    assert hexdigest == expected
    assert queued, "the upstream's bytes came through the proxy's own sockets"
    assert max(queued) <= CHUNK, f"bytes queued unread, at most: {max(queued)}"
