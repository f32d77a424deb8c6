"""A hostile index for the tests: a loopback HTTP server that answers each path with whatever a test
tells it, and records what it was asked.

One double serves every attack of the security tests: a PEP 691 or PEP 503 page listing files on
any URL, a redirect to anywhere, a body given whole, generated lazily (a 200 MB page costs no
memory here) or dripped slowly, a `Set-Cookie`. Pointed at from a page, a second instance is the
"internal service" a server-side request forgery would reach: its `asked` list shows what got
through (paths, headers, credentials, cookies).

Raw ASGI under uvicorn (tests/servers.py), so the test decides every header and every byte. Every
body is bounded by what the test gives it; a drip has a byte count and a pace, and stops when its
client hangs up or the server stops (the fixture's end).
"""

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gitlab_pypi_proxy.demo.server import Server, serve

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html; charset=utf-8"

Body = bytes | Callable[[], Iterable[bytes]]


@dataclass
class Reply:
    """One answer: `body` is bytes, or a function giving the chunks (called per request);
    `pace` seconds pass before each chunk (a drip)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Body = b""
    pace: float = 0.0
    ranges: bool = False  # a bytes body answers a single `Range: bytes=a-b` or `bytes=-n`


@dataclass(frozen=True)
class Asked:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; a repeated header's values joined by ", "


@dataclass
class HostileIndex:
    replies: dict[str, Reply] = field(default_factory=dict)
    asked: list[Asked] = field(default_factory=list)
    url: str = ""  # set once served

    def on(self, path: str, reply: Reply) -> None:
        self.replies[path] = reply

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.on(path, Reply(status, [("location", location)]))

    def json_page(self, name: str, files: list[dict[str, object]], **extra: object) -> None:
        """`/simple/<name>/` as PEP 691 JSON with these file entries (anything, well-formed or
        not) and any other top-level keys."""
        document = {"meta": {"api-version": "1.1"}, "name": name, "files": files, **extra}
        self.on(f"/simple/{name}/", Reply(headers=[("content-type", JSON)], body=_json(document)))

    def file(self, path: str, data: bytes) -> None:
        """A file at `path`, honouring one byte range as object storage does."""
        self.on(path, Reply(body=data, ranges=True))

    def html_page(self, name: str, anchors: Iterable[str]) -> None:
        """`/simple/<name>/` as PEP 503 HTML with these `<a ...>...</a>` elements."""
        body = "<!DOCTYPE html><html><body>" + "".join(anchors) + "</body></html>"
        self.on(f"/simple/{name}/", Reply(headers=[("content-type", HTML)], body=body.encode()))

    def paths(self) -> list[str]:
        return [a.path for a in self.asked]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        query = scope["query_string"].decode()
        path = scope["path"] + (f"?{query}" if query else "")
        self.asked.append(Asked(scope["method"], path, headers))
        reply = self.replies.get(path) or self.replies.get(scope["path"])
        if reply is None:
            reply = Reply(404, [("content-type", "text/plain")], b"not here")
        if reply.ranges and isinstance(reply.body, bytes) and "range" in headers:
            reply = _ranged(reply.body, headers["range"])
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        chunks = [reply.body] if isinstance(reply.body, bytes) else reply.body()
        gone = asyncio.ensure_future(_disconnected(receive)) if reply.pace else None
        try:
            for chunk in chunks:
                if gone is not None:
                    await asyncio.sleep(reply.pace)  # the drip's pace is what is being tested
                    if gone.done():
                        return  # the client hung up: the drip ends with it
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            if gone is not None:
                gone.cancel()


async def _disconnected(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _ranged(data: bytes, spec: str) -> Reply:
    first, _, last = spec.removeprefix("bytes=").partition("-")
    if first:
        start, end = int(first), min(int(last or len(data) - 1), len(data) - 1)
    else:
        start, end = max(0, len(data) - int(last)), len(data) - 1
    headers = [("content-range", f"bytes {start}-{end}/{len(data)}")]
    return Reply(206, headers, data[start : end + 1])


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


def repeated(piece: bytes, total: int, chunk: int = 1 << 20) -> Callable[[], Iterator[bytes]]:
    """A body of `piece` repeated up to `total` bytes, generated as it is sent."""

    def chunks() -> Iterator[bytes]:
        block = piece * max(1, chunk // len(piece))
        sent = 0
        while sent < total:
            part = block[: total - sent]
            sent += len(part)
            yield part

    return chunks


def drip(data: bytes) -> Callable[[], Iterator[bytes]]:
    """`data` one byte at a time (give the Reply a `pace`)."""
    return lambda: (data[i : i + 1] for i in range(len(data)))


@contextmanager
def hostile_index() -> Iterator[tuple[HostileIndex, Server]]:
    """A HostileIndex served on a loopback port until the block ends."""
    index = HostileIndex()
    with serve(index) as server:
        index.url = server.url
        yield index, server
