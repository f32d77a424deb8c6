"""Where a file can be had from, and getting it: the file side of the index.

A file URL names a sha256 and a file name. Its candidates are the readable sources whose pages
listed it (gitlab_pypi_proxy.storage.locations), then every readable source that can be asked by
digest alone (GitLab), so a file URL works even if no page was ever fetched. The first candidate
that has it serves it; one that cannot be reached does not stop the others from being tried."""

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from gitlab_pypi_proxy.errors import FileNotFoundUpstream, SourceUnavailable, Unavailable
from gitlab_pypi_proxy.index.base import Readable
from gitlab_pypi_proxy.model import DistFile, FileStream
from gitlab_pypi_proxy.names import file_project_name
from gitlab_pypi_proxy.sources.base import Details, Source
from gitlab_pypi_proxy.storage.locations import FileLocations


class FileFinder:
    def __init__(
        self,
        sources: Sequence[Source],
        locations: FileLocations,
        details: Mapping[str, Details] | None = None,
    ) -> None:
        self.sources = list(sources)  # in priority order
        self.by_name = {s.name: s for s in self.sources}
        self.locations = locations
        self.details = dict(details or {})  # per GitLab source: its PEP 700 details

    async def locate(self, sha256: str, filename: str, allowed: Readable = None) -> list[DistFile]:
        """Where a readable source offers this file, most likely first: the sources whose
        pages listed it (a GitLab source's page, once where its files are has been remembered,
        in the background), then every readable source that can be asked by digest alone."""
        readable = [s for s in self.sources if allowed is None or s.name in allowed]
        names = {s.name for s in readable}
        listed = await self.locations.of(sha256)
        candidates = [f for f in listed if f.source in names and f.filename == filename]
        seen = {f.source for f in candidates}
        candidates += [
            f
            for s in readable
            if s.name not in seen and (f := s.file_for(sha256, filename)) is not None
        ]
        return candidates

    async def file_size(self, candidates: Sequence[DistFile]) -> int | None:
        """The size of the file from the first candidate that has it, without downloading it:
        the size a page listed (no request at all), or the exact size GitLab's `package_files`
        gave since (details arrive in the background), else what its upstream says (None if it
        does not say).

        Raises FileNotFoundUpstream when none has it, Unavailable when one that might could not
        be reached.
        """
        listed = next((f.size for f in candidates if f.size is not None), None)
        if listed is not None:
            return listed
        for file in candidates:
            details, project = self.details.get(file.source), file_project_name(file.filename)
            if details is not None and project is not None:
                known = await details.refine(project, [file])
                if known and known[0].size is not None:
                    return known[0].size
        failures: list[SourceUnavailable] = []
        for file in candidates:
            try:
                return await self.by_name[file.source].file_size(file)
            except FileNotFoundUpstream:
                continue
            except SourceUnavailable as exc:
                failures.append(exc)
        if failures:
            raise Unavailable(failures)
        raise FileNotFoundUpstream("no source has this file")

    @asynccontextmanager
    async def open_first(self, candidates: Sequence[DistFile]) -> AsyncIterator[FileStream]:
        """Stream the file from the first candidate that has it.

        Raises FileNotFoundUpstream when none has it, Unavailable when one that might could not
        be reached.
        """
        failures: list[SourceUnavailable] = []
        for file in candidates:
            stack = AsyncExitStack()
            try:
                stream = await stack.enter_async_context(self.by_name[file.source].open_file(file))
            except FileNotFoundUpstream:
                await stack.aclose()
                continue
            except SourceUnavailable as exc:
                failures.append(exc)
                await stack.aclose()
                continue
            async with stack:
                yield stream
            return
        if failures:
            raise Unavailable(failures)
        raise FileNotFoundUpstream("no source has this file")
