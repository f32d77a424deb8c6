"""HTTP responses for distribution files: headers, single byte ranges, and safe streaming.

A body that fails midway (upstream reset, digest mismatch, a cached file found corrupt on the way
out) is cut: the connection closes short of its Content-Length, so no client mistakes a partial
or wrong file for a whole one.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

from proxy.cache.cached_file import CachedFile

log = logging.getLogger("proxy.files")

Scope = dict[str, Any]


def file_headers(sha256: str, size: int | None, mtime: float | None, cache: str) -> dict[str, str]:
    headers = {
        "content-type": "application/octet-stream",
        "etag": f'"{sha256}"',
        "cache-control": "public, max-age=31536000, immutable",
        "x-cache": cache,
    }
    if size is not None:
        headers["content-length"] = str(size)
    if mtime is not None:
        headers["last-modified"] = formatdate(mtime, usegmt=True)
    return headers


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (start, end inclusive); None to serve the whole file.

    Raises ValueError when the range cannot be satisfied (416).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units, or several ranges: a 200 with the whole file is allowed
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last.isdigit() else size - 1
    if start >= size or end < start:
        raise ValueError("range starts past the end")
    return start, end


class FileBody:
    """An ASGI response streaming `chunks` with backpressure, stopping when the client leaves."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        chunks: AsyncIterator[bytes] | None,
        *,
        label: str,
        on_close: Any = None,
    ) -> None:
        self.status, self.headers, self.chunks = status, headers, chunks
        self.label, self.on_close = label, on_close

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        left = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            left.set()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status, "headers": raw})
            if self.chunks is not None:
                async for chunk in self.chunks:
                    if left.is_set():
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:  # cut the connection: the client must not see a whole body
            log.error("download of %s cut: %s", self.label, exc)
        finally:
            watcher.cancel()
            if self.chunks is not None:
                with contextlib.suppress(Exception):
                    await self.chunks.aclose()  # type: ignore[attr-defined]
            if self.on_close is not None:
                await asyncio.to_thread(self.on_close)


def cached_response(cached: CachedFile, sha256: str, request_headers: Any, method: str) -> FileBody:
    """A cached file: ranges, conditional requests and HEAD; its bytes checked as they go."""
    headers = file_headers(sha256, cached.size, cached.mtime, "HIT")
    headers["accept-ranges"] = "bytes"
    # A small file was read whole at lookup: nothing left to close, no thread hop to do it.
    close = cached.close if cached.handle is not None else None
    if request_headers.get("if-none-match") in (f'"{sha256}"', "*"):
        headers.pop("content-length")
        return FileBody(304, headers, None, label=sha256, on_close=close)
    status, start, end = 200, 0, cached.size - 1
    range_header = request_headers.get("range")
    if_range = request_headers.get("if-range")
    if range_header and (if_range is None or if_range == f'"{sha256}"'):
        try:
            selected = parse_range(range_header, cached.size)
        except ValueError:
            headers["content-range"] = f"bytes */{cached.size}"
            headers["content-length"] = "0"
            return FileBody(416, headers, None, label=sha256, on_close=close)
        if selected is not None:
            status, (start, end) = 206, selected
            headers["content-range"] = f"bytes {start}-{end}/{cached.size}"
            headers["content-length"] = str(end - start + 1)
    body = None if method == "HEAD" else cached.chunks(start, end)
    return FileBody(status, headers, body, label=sha256, on_close=close)
