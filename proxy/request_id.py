"""Request ids: the client's `X-Request-ID` (or one made here) on every log line of its request
and on its response.

A small ASGI middleware sets a context variable for the request's task; `RequestIdFilter`, a
logging filter on the handler, copies it into each record as `record.request_id` ("-" outside a
request), where the text and JSON formats show it. Tasks and threads a request starts copy the
context, so their lines carry the id of the request that started them; work for every request to
come (a watchdog) is started `detached`, naming none.
"""

import asyncio
import contextvars
import logging
import os
import re
from collections.abc import Coroutine
from typing import Any, TypeVar

Scope = dict[str, Any]
T = TypeVar("T")
HEADER = b"x-request-id"
NONE = "-"
MAX_LENGTH = 128
# Visible ASCII without `"` and `\`: nothing that could break a log line, its quoting or a header.
_VALID = re.compile(rb"[!#-\[\]-~]{1,%d}" % MAX_LENGTH)

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NONE)


def accepted(value: bytes | None) -> str | None:
    """The client's id if it is one we can log and send back as it is, else None."""
    if value is None or not _VALID.fullmatch(value):
        return None
    return value.decode("ascii")


def made() -> str:
    """32 random hex digits: as unique as a UUID4, made in a fifth of the time."""
    return os.urandom(16).hex()


def detached(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task for work that serves no one request, even when a request happens to start it (a
    watchdog for every request to come): its lines carry no request's id."""
    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, NONE)
    return asyncio.get_running_loop().create_task(work, context=context)


def _header(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for key, value in headers:
        if key == HEADER:  # ASGI servers give header names in lowercase
            return value
    return None


class RequestId:
    """Outermost middleware: names the request and puts the name on its response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = accepted(_header(scope["headers"])) or made()
        encoded = name.encode("ascii")

        async def named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, encoded)]}
            await send(message)

        token = REQUEST_ID.set(name)
        await self.app(scope, receive, named)
        # Not reset when the app raised: the server logs the traceback after this returns, in
        # the request's own task, and that line belongs to the request too.
        REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """A handler filter: every record gets `request_id`, for the formats to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
