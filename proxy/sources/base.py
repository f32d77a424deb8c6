"""The protocol every source speaks, and the errors it may raise."""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import httpx2

from proxy.model import DistFile, ProjectPage


class SourceUnavailable(Exception):
    """The source could not be asked (connection error, timeout, 5xx). Never holds a secret."""

    def __init__(self, source: str, reason: str, *, timeout: bool = False) -> None:
        super().__init__(f"upstream {source} unavailable: {reason}")
        self.source, self.reason, self.timeout = source, reason, timeout


class RateLimited(SourceUnavailable):
    """No request may go to the source now: it answered 429 (its rate limit) and its Retry-After
    has not passed, or the proxy's own request budget for it is spent."""

    def __init__(self, source: str, reason: str, retry_after: float) -> None:
        super().__init__(source, reason)
        self.retry_after = retry_after


class Refused(Exception):
    """The source answered, but would not give what was asked (401, 403, 404, ...): a token
    without the scope or the access it needs, or a wrong project. Never holds a secret."""

    def __init__(self, source: str, what: str, status: int, hint: str = "") -> None:
        super().__init__(f"source {source}: {what} answered HTTP {status}{hint}")
        self.source, self.status = source, status


class FileNotFoundUpstream(Exception):
    """The source does not have that file (or refuses to show it)."""


@dataclass
class FileStream:
    """An upstream file being downloaded: its announced size and its bytes."""

    size: int | None
    chunks: AsyncIterator[bytes]


class Source(Protocol):
    name: str

    async def project_page(self, name: str) -> ProjectPage | None:
        """The page of normalized `name`, or None when this source does not have it."""
        ...

    async def project_names(self) -> frozenset[str]:
        """Every normalized project name this source holds."""
        ...

    def open_file(self, file: DistFile) -> AbstractAsyncContextManager[FileStream]:
        """Stream a file this source listed. Raises FileNotFoundUpstream or SourceUnavailable."""
        ...

    def file_for(self, sha256: str, filename: str) -> DistFile | None:
        """A file this source can be asked for by digest alone, without its page (or None)."""
        ...

    def auth_for(self, url: str) -> httpx2.Auth | None:
        """The credentials to send with a request for `url` (a file this source listed)."""
        ...
