"""HTTP/1.1 reason phrases that say why an answer is an error.

pip and uv print a failed download's status line, never its body: a build pinned to a file the
policy holds, or a 502 naming the upstream, reaches the build's log only through that phrase.
ASGI has no field for one and uvicorn writes the standard phrase from a table, so an error's
status is a PhrasedStatus (gitlab_pypi_proxy.http.error_responses), an int that carries its
phrase, and uvicorn's httptools table of status lines is wrapped once per worker to prefer it.

Internal name used: `uvicorn.protocols.http.httptools_impl.STATUS_LINE`, tested on uvicorn
0.55; tests/unit/test_reason_phrases.py fails when a real server stops writing the phrase. A
uvicorn without the table serves the standard phrase, said once in the log at worker start."""

import logging

from gitlab_pypi_proxy.http.error_responses import PhrasedStatus

log = logging.getLogger("proxy.http")


class _Lines(dict[int, bytes]):
    """uvicorn's httptools table of status lines: a `PhrasedStatus` gets its own phrase."""

    def __getitem__(self, status: int) -> bytes:
        if isinstance(status, PhrasedStatus):
            return f"HTTP/1.1 {int(status)} {status.phrase}\r\n".encode()
        return super().__getitem__(status)


def install() -> None:
    """Make this process's uvicorn write a `PhrasedStatus`'s own phrase. Idempotent."""
    from uvicorn.protocols.http import httptools_impl

    table = vars(httptools_impl).get("STATUS_LINE")
    if not isinstance(table, dict):
        log.warning(
            "this uvicorn has no table of status lines: errors keep the standard reason phrase"
        )
        return
    if not isinstance(table, _Lines):
        httptools_impl.STATUS_LINE = _Lines(table)
