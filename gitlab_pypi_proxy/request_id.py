"""Request ids: the client's `X-Request-ID` (or one made here) on every log line of its request
and on its response.

The outermost ASGI layer (gitlab_pypi_proxy.http.access_log) sets a context variable for the
request's task; `RequestIdFilter`, a logging filter on the handler, copies it into each record as
`record.request_id` ("-" outside a request), where the text and JSON formats show it. Tasks and
threads a request starts copy the context, so their lines carry the id of the request that started
them; work for every request to come (a watchdog) is started `detached`, naming none."""

import contextvars
import itertools
import logging
import os
import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the supervisor's logging imports this module: no asyncio there
    import asyncio

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


def _new_prefix() -> None:
    global _prefix
    _prefix = os.urandom(8).hex()


_prefix = ""
_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)  # a forked child counts under a prefix of its own
_count = itertools.count(1)


def made() -> str:
    """32 hex digits: this process's random 64-bit prefix and a count of the ids it made: unique
    unless two processes draw the same prefix, with no call for randomness per request."""
    return f"{_prefix}{next(_count):016x}"


def detached(work: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
    """A task for work that serves no one request, even when a request happens to start it (a
    watchdog for every request to come): its lines carry no request's id."""
    import asyncio

    context = contextvars.copy_context()
    context.run(REQUEST_ID.set, NONE)
    return asyncio.get_running_loop().create_task(work, context=context)


class RequestIdFilter(logging.Filter):
    """A handler filter: every record gets `request_id`, for the formats to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
