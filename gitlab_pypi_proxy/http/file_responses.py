"""HTTP responses for distribution files: headers, single byte ranges, and safe streaming.

A range is served whether or not the file is cached (gitlab_pypi_proxy.http.app decides where
its bytes come from): the same parsing, the same 206 and 416 answers; a body of a range has
exactly the length its headers announce, or is cut.

A body that fails midway (upstream reset, digest mismatch, a cached file found corrupt on the way
out) is cut: the connection closes short of its Content-Length, so no client mistakes a partial
or wrong file for a whole one.
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

from gitlab_pypi_proxy.storage.blobs import Blob

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


# RFC 9110 14.1.2: `first-pos "-" [ last-pos ]` or `"-" suffix-length`, ASCII digits only.
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
# More significant digits than this cannot name a byte of any file (and 5,000 would pass
# Python's int() limit): such a header is ignored, never converted.
_MAX_DIGITS = 18


def _magnitude(digits: str) -> tuple[int, str]:
    """A sort key for a decimal number written with any number of leading zeros."""
    digits = digits.lstrip("0") or "0"
    return len(digits), digits


def _position(digits: str, size: int) -> int:
    """The number (of at most _MAX_DIGITS significant digits), at most `size`."""
    return min(int(_magnitude(digits)[1]), size)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (start, end inclusive); None to serve the whole file.

    A header that is not one valid byte range is ignored (None), as RFC 9110 says: another unit,
    several ranges, `bytes=1-2-3`, `bytes=+1-2`, non-ASCII digits, a last-pos before the first.
    A number too long to name a byte of any file (more than 18 significant digits) makes the
    header ignored too: RFC 9110 lets a server ignore any Range, and no client means one. Raises
    ValueError when the range is valid but cannot be satisfied (416): it starts past the end, or
    it is an empty suffix.
    """
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":
        return None
    match = _RANGE_SPEC.fullmatch(spec.strip(" \t"))
    if match is None:
        return None  # several ranges (a 200 with the whole file is allowed) or not a range
    first, last = match.groups()
    if any(_magnitude(n)[0] > _MAX_DIGITS for n in (first, last)):
        return None
    if not first:
        if not last:
            return None
        length = _position(last, size)
        if length == 0:  # a zero suffix, or any suffix of an empty file
            raise ValueError("empty suffix range")
        return size - length, size - 1
    if last and _magnitude(last) < _magnitude(first):
        return None  # invalid, not unsatisfiable
    start = _position(first, size)
    if start >= size:
        raise ValueError("range starts past the end")
    end = _position(last, size - 1) if last else size - 1
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
                self.on_close()  # a descriptor closed, a note dropped: no thread hop for that


def requested_range(request_headers: Any, sha256: str) -> str | None:
    """The request's Range header, if it applies: no If-Range, or one naming this file's ETag
    (a digest's bytes never change)."""
    range_header = request_headers.get("range")
    if_range = request_headers.get("if-range")
    if range_header and (if_range is None or if_range == f'"{sha256}"'):
        return str(range_header)
    return None


def partial_headers(
    sha256: str, start: int, end: int, size: int, mtime: float | None, cache: str
) -> dict[str, str]:
    """The headers of a 206 with bytes `start` to `end` of a file of `size` bytes."""
    headers = file_headers(sha256, end - start + 1, mtime, cache)
    headers["accept-ranges"] = "bytes"
    headers["content-range"] = f"bytes {start}-{end}/{size}"
    return headers


def unsatisfiable(sha256: str, size: int, cache: str, on_close: Any = None) -> FileBody:
    """416: the range asked for is not in a file of `size` bytes."""
    headers = file_headers(sha256, 0, None, cache)
    headers["accept-ranges"] = "bytes"
    headers["content-range"] = f"bytes */{size}"
    return FileBody(416, headers, None, label=sha256, on_close=on_close)


async def exactly(chunks: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """`chunks` as long as they add up to `length` bytes; more or fewer raise (the body is
    cut: a client never takes a short or long answer for the range it asked)."""
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        if sent > length:
            raise ValueError(f"the upstream sent more than the {length} bytes of its range")
        yield chunk
    if sent != length:
        raise ValueError(f"the upstream sent {sent} of the {length} bytes of its range")


def not_modified(request_headers: Any, sha256: str) -> bool:
    """Does the client hold this file already (If-None-Match naming its ETag)?"""
    return request_headers.get("if-none-match") in (f'"{sha256}"', "*")


def accel_response(cached: Blob, location: str) -> FileBody:
    """A cached file nginx in front sends itself from the cache directory (X-Accel-Redirect to
    its internal `location`): the proxy's headers, nginx's body, ranges and HEAD. nginx keeps
    Content-Type and Cache-Control of these; its internal location passes on the others."""
    headers = file_headers(cached.sha256, 0, None, "HIT")
    headers["x-accel-redirect"] = location
    close = cached.close if cached.holds_resources else None
    return FileBody(200, headers, None, label=cached.sha256, on_close=close)


def cached_response(cached: Blob, sha256: str, request_headers: Any, method: str) -> FileBody:
    """A cached file: ranges, conditional requests and HEAD; its bytes checked as they go."""
    headers = file_headers(sha256, cached.size, cached.mtime, "HIT")
    headers["accept-ranges"] = "bytes"
    # A small file was read whole at lookup: nothing left to close.
    close = cached.close if cached.holds_resources else None
    if not_modified(request_headers, sha256):
        headers.pop("content-length")
        return FileBody(304, headers, None, label=sha256, on_close=close)
    status, start, end = 200, 0, cached.size - 1
    range_header = requested_range(request_headers, sha256)
    if range_header:
        try:
            selected = parse_range(range_header, cached.size)
        except ValueError:
            return unsatisfiable(sha256, cached.size, "HIT", close)
        if selected is not None:
            status, (start, end) = 206, selected
            headers = partial_headers(sha256, start, end, cached.size, cached.mtime, "HIT")
    body = None if method == "HEAD" else cached.chunks(start, end)
    return FileBody(status, headers, body, label=sha256, on_close=close)
