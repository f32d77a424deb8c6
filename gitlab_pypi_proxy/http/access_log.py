"""The outermost layer every HTTP request passes: it names the request
(gitlab_pypi_proxy.request_id: the client's `X-Request-ID`, or one made here, on every log line of
the request and on its answer), and once the answer is sent writes its access log line and request
metrics. One layer and one small object per request, not one wrapper each: this is paid by every
memo hit.

It replaces uvicorn's access log: it also knows the cache outcome (the X-Cache header), the body
bytes actually sent, the time to the last byte, and the user name an authenticating layer left in
`scope["state"]` ("-" if none). No header, query string or credential is ever logged.
Also here: the logging set-up for `serve` (text for people, JSON lines for machines). Log lines
carry text from upstreams and clients (file names, reasons, publishers): both formats write
its control characters escaped (gitlab_pypi_proxy.printable), so one record is one line, and
a text record's traceback has every line indented: a line at the margin is always a record's.
"""

import json
import logging
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.printable import escaped
from gitlab_pypi_proxy.request_id import HEADER, REQUEST_ID, accepted, made

Scope = dict[str, Any]
log = logging.getLogger("proxy.access")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_LINE = '%s %s "%s %s" %d %d %.2fms cache=%s'
_FIELDS = ("client", "user", "method", "path", "status", "bytes", "duration_ms", "cache")


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
        _LINE,
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


class TextFormatter(logging.Formatter):
    """The text format: the record on one line, its traceback (if any) indented below it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escaped(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(stack_info)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_text:  # formatted by an earlier filter (redact): indented here
            record.exc_text = _indented(record.exc_text)
        return super().format(record)


def _indented(text: str) -> str:
    lines = text.splitlines()
    if all(line.startswith("    ") for line in lines):
        return text  # indented already (a record formatted twice)
    return "\n".join("    " + escaped(line) for line in lines)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access lines carry their fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(
                record, "request_id", "-"
            ),  # gitlab_pypi_proxy.request_id's filter
            "message": escaped(record.getMessage()),
        }
        if record.msg == _LINE and isinstance(record.args, tuple):  # an access line, no other
            line.update(
                (key, escaped(value) if isinstance(value, str) else value)
                for key, value in zip(_FIELDS, record.args, strict=True)
            )
            line["duration_ms"] = round(line["duration_ms"], 2)
        if record.exc_info:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A logging.config.dictConfig for uvicorn to apply in every worker process."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"class": f"{__name__}.TextFormatter", "format": _TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {
            "userinfo": {"()": "gitlab_pypi_proxy.redact.MaskUserinfo"},
            "request_id": {"()": "gitlab_pypi_proxy.request_id.RequestIdFilter"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["userinfo", "request_id"],  # no URL credentials; the request's id
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
            "httpx2": {"level": "WARNING"},  # one line per upstream call is noise
        },
    }
