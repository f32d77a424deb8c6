"""The protocol every source speaks (the errors it may raise are in proxy.errors)."""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import httpx2

from proxy.model import DistFile, ProjectPage


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
