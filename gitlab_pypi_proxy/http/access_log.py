"""The outermost layer every HTTP request passes: it names the request
(gitlab_pypi_proxy.request_id: the client's `X-Request-ID`, or one made here, on every log line of
the request and on its answer), and once the answer is sent writes its access log line and request
metrics. One layer and one small object per request, not one wrapper each: this is paid by every
memo hit.

It replaces uvicorn's access log: it also knows the cache outcome (the X-Cache header), the body
bytes actually sent, the time to the last byte, and the user name an authenticating layer left in
`scope["state"]` ("-" if none). No header, query string or credential is ever logged.
Its line is ACCESS_LINE, whose fields the JSON format writes as fields of their own
(gitlab_pypi_proxy.log_format).
"""

import logging
import time
from functools import lru_cache
from typing import Any

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.log_format import ACCESS_LINE
from gitlab_pypi_proxy.request_id import HEADER, REQUEST_ID, accepted, made

Scope = dict[str, Any]
log = logging.getLogger("proxy.access")


@lru_cache(maxsize=512)
def _children(route: str, status: int) -> tuple[Any, Any]:
    """The metric children of one route and status, looked up once (labels() takes a lock)."""
    return metrics.REQUESTS.labels(route, str(status)), metrics.LATENCY.labels(route)


def _user(scope: Scope) -> str:
    identity = scope.get(
        "identity"
    )  # left by gitlab_pypi_proxy.http.access, inside this middleware
    if identity is None or identity.anonymous:
        return "-"
    name = identity.user or "passthrough"
    return "".join(c for c in name if c.isprintable() and not c.isspace())[:64] or "-"


def _named(scope: Scope) -> str:
    """The client's id if it is one we can log and send back as it is, else a new one."""
    for key, value in scope["headers"]:
        if key == HEADER:  # ASGI servers give header names in lowercase
            return accepted(value) or made()
    return made()


class _Answer:
    """What one request's answer carried: the `send` the app is given."""

    __slots__ = ("_send", "cache", "name", "sent", "status")

    def __init__(self, send: Any, name: str) -> None:
        self._send, self.name = send, name
        self.status, self.sent, self.cache = 0, 0, b"-"

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
        elif message["type"] == "http.response.start":
            self.status = message["status"]
            headers = []
            for key, value in message.get("headers", ()):
                lowered = key.lower()
                if lowered == b"x-cache":
                    self.cache = value
                elif lowered == HEADER:
                    continue  # the app's own is replaced by the request's
                headers.append((key, value))
            headers.append((HEADER, self.name.encode("ascii")))
            message = {**message, "headers": headers}
        await self._send(message)


class AccessLog:
    """Names the request, puts its id on the answer, logs and counts the answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answer = _Answer(send, _named(scope))
        token = REQUEST_ID.set(answer.name)
        try:
            await self.app(scope, receive, answer.send)
        finally:
            _record(scope, answer.status or 500, answer.sent, time.perf_counter() - start, answer)
        # Not reset when the app raised: the server logs the traceback after this returns, in
        # the request's own task, and that line belongs to the request too.
        REQUEST_ID.reset(token)


def _record(scope: Scope, status: int, sent: int, duration: float, answer: _Answer) -> None:
    endpoint = scope.get("endpoint")
    route = getattr(endpoint, "__name__", "unmatched")
    counter, latency = _children(route, status)
    counter.inc()
    latency.observe(duration)
    if route == "distribution_file" and sent:
        origin = "cache" if answer.cache == b"HIT" else "upstream"
        metrics.SERVED_BYTES.labels(origin).inc(sent)
    if not log.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    log.info(
        ACCESS_LINE,
        client[0] if client else "-",
        _user(scope),
        scope["method"],
        # the raw, still percent-encoded path: nothing in it can break a log line
        (scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
        status,
        sent,
        duration * 1000,
        answer.cache.decode("latin-1"),
    )
