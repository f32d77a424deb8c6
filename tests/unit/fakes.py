"""An in-process Source for unit tests of the layers above the upstream client."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

from gitlab_pypi_proxy.errors import FileNotFoundUpstream, SourceUnavailable
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage
from gitlab_pypi_proxy.sources.base import RangeReader
from gitlab_pypi_proxy.sources.upstream import Head

# The services' poll for names published to GitLab, for routes tested without the services
NO_POLL = SimpleNamespace(asked=lambda: None)


@dataclass
class FakeSource:
    name: str
    pages: dict[str, list[DistFile]] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)  # sha256 → bytes served
    down: bool = False
    page_calls: int = 0
    file_calls: int = 0
    gate: asyncio.Event | None = None  # when set, file bodies wait for it after the first chunk
    ranged: list[str] = field(default_factory=list)  # the file names ranged reads were tried on

    def add(self, project: str, filename: str, sha256: str, content: bytes = b"") -> DistFile:
        file = DistFile(filename=filename, sha256=sha256, source=self.name, url=f"fake://{sha256}")
        self.pages.setdefault(project, []).append(file)
        self.contents[sha256] = content
        return file

    async def project_page(self, name: str) -> ProjectPage | None:
        self.page_calls += 1
        await asyncio.sleep(0)
        if self.down:
            raise SourceUnavailable(self.name, "ConnectError")
        files = self.pages.get(name)
        return None if files is None else ProjectPage(name, tuple(files), (self.name,))

    async def project_names(self) -> frozenset[str]:
        if self.down:
            raise SourceUnavailable(self.name, "ConnectError")
        return frozenset(self.pages)

    def file_for(self, sha256: str, filename: str) -> DistFile:
        return DistFile(filename=filename, sha256=sha256, source=self.name, url=f"fake://{sha256}")

    async def file_head(self, file: DistFile) -> Head:
        """As an upstream that serves no ranges says it."""
        if self.down:
            raise SourceUnavailable(self.name, "ConnectError")
        if file.sha256 not in self.contents:
            raise FileNotFoundUpstream(file.filename)
        return Head(len(self.contents[file.sha256]))

    def range_reader(self, file: DistFile, *, background: bool) -> RangeReader:
        async def read(spec: str) -> tuple[bytes, str | None]:
            self.ranged.append(file.filename)
            raise SourceUnavailable(self.name, "no ranged reads here")

        return read

    @asynccontextmanager
    async def open_file(
        self, file: DistFile, byte_range: str | None = None
    ) -> AsyncIterator[FileStream]:
        """The whole file, whatever `byte_range` asks (an upstream that serves no ranges)."""
        self.file_calls += 1
        if self.down:
            raise SourceUnavailable(self.name, "ConnectError")
        if file.sha256 not in self.contents:
            raise FileNotFoundUpstream(file.filename)
        content = self.contents[file.sha256]

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(content), 1000):
                yield content[start : start + 1000]
                if self.gate is not None:
                    await self.gate.wait()

        yield FileStream(size=len(content), chunks=chunks())
