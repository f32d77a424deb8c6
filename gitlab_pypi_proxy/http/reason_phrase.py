"""HTTP/1.1 reason phrases that say why an answer is an error.

pip and uv print a failed download's status line, never its body: pip "404 Client Error:
<phrase> for url: ...", uv "HTTP status client error (404 <phrase>) for url (...)". A build
pinned to a file the policy holds (uv.lock, pylock.toml, `name @ url`, a hashed requirement
with its URL) or a 502 naming the upstream reaches the build's log only through that phrase.

ASGI has no field for a reason phrase and uvicorn writes the standard one from a table indexed
by the status, so written here because no server or library offers it: an error's status is a
`gitlab_pypi_proxy.errors.Status`, an int that carries its phrase, and uvicorn's two tables
(httptools and h11) are wrapped once per process to prefer it. A plain int status gets the standard
phrase."""

from gitlab_pypi_proxy.errors import Status


class _Lines(dict[int, bytes]):
    """uvicorn's httptools table of status lines, which a `Status` answers with its phrase."""

    def __getitem__(self, status: int) -> bytes:
        if isinstance(status, Status):
            return f"HTTP/1.1 {int(status)} {status.phrase}\r\n".encode()
        return super().__getitem__(status)


class _Phrases(dict[int, bytes]):
    """uvicorn's h11 table of reason phrases, likewise."""

    def __getitem__(self, status: int) -> bytes:
        if isinstance(status, Status):
            return status.phrase.encode()
        return super().__getitem__(status)


def install() -> None:
    """Make this process's uvicorn write a `Status`'s own phrase. Idempotent."""
    from uvicorn.protocols.http import h11_impl, httptools_impl

    if not isinstance(httptools_impl.STATUS_LINE, _Lines):
        httptools_impl.STATUS_LINE = _Lines(httptools_impl.STATUS_LINE)
    if not isinstance(h11_impl.STATUS_PHRASES, _Phrases):
        h11_impl.STATUS_PHRASES = _Phrases(h11_impl.STATUS_PHRASES)
