"""Where a file can be had from, and getting it: the file side of the index.

A file URL names a sha256 and a file name. Its candidates are the readable sources whose pages
listed it (gitlab_pypi_proxy.storage.locations), in priority order, then every readable source
that can be asked by digest alone (GitLab), so a file URL works without its page. The first
candidate that has it serves it; one that cannot be reached does not stop the others. A listing
is a claim, not proof: cached bytes go to a reader only once a source it may read delivered them
(gitlab_pypi_proxy.storage.deliveries); otherwise a candidate's bytes are verified first. A file
not cached is described without downloading it (`head`) and read by ranges from its source;
what each source says of sizes and ranges is remembered, so a client reading a wheel's end by
ranges costs one upstream request per range."""

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.errors import (
    FileNotFoundUpstream,
    NotAsListed,
    SourceUnavailable,
    Unavailable,
)
from gitlab_pypi_proxy.index.index_protocol import Readable
from gitlab_pypi_proxy.model import DistFile, FileStream
from gitlab_pypi_proxy.names import file_project_name
from gitlab_pypi_proxy.sources.base import Details, Source
from gitlab_pypi_proxy.sources.upstream import Head
from gitlab_pypi_proxy.storage.deliveries import Deliveries, Opener
from gitlab_pypi_proxy.storage.locations import FileLocations

_REMEMBERED = 4096  # digests (~250 bytes each)


class FileFinder:
    def __init__(
        self,
        sources: Sequence[Source],
        locations: FileLocations,
        deliveries: Deliveries,
        details: Mapping[str, Details] | None = None,
        ranged: Iterable[str] = (),
    ) -> None:
        self.sources = list(sources)  # in priority order
        self.by_name = {s.name: s for s in self.sources}
        self.priority = {s.name: n for n, s in enumerate(self.sources)}
        self.locations, self.deliveries = locations, deliveries
        # digests cached before delivery records (none at all): a reader of every source may
        # have them, whatever is recorded later (records only grow, by configured sources)
        self._unrecorded: TTLMemo[str, None] = TTLMemo(_REMEMBERED)
        self.details = dict(details or {})  # per GitLab source: its PEP 700 details
        # what the upstreams said: a file's size, by (source, digest); whether a source's
        # files are served by ranges, as its latest answer showed (`ranged` sources: known to)
        self._sizes: TTLMemo[tuple[str, str], int] = TTLMemo(_REMEMBERED)
        self._ranges: dict[str, bool] = dict.fromkeys(ranged, True)

    async def locate(self, sha256: str, filename: str, allowed: Readable = None) -> list[DistFile]:
        """Where a readable source offers this file, most likely first: the sources whose
        pages listed it (a GitLab source's page, once where its files are has been remembered,
        in the background), then every readable source that can be asked by digest alone."""
        readable = [s for s in self.sources if allowed is None or s.name in allowed]
        names = {s.name for s in readable}
        listed = await self.locations.of(sha256)
        candidates = sorted(
            (f for f in listed if f.source in names and f.filename == filename),
            key=lambda f: self.priority[f.source],
        )
        seen = {f.source for f in candidates}
        candidates += [
            f
            for s in readable
            if s.name not in seen and (f := s.file_for(sha256, filename)) is not None
        ]
        return candidates

    async def head(self, candidates: Sequence[DistFile]) -> Head:
        """The size of the file and whether its source serves ranges, without downloading it:
        the size a page listed or GitLab's `package_files` gave since (details arrive in the
        background) or an upstream said before, with what the first candidate's source said of
        ranges; else (asked once per source) what the first candidate that has it says.

        Raises FileNotFoundUpstream when none has it, Unavailable when one that might could not
        be reached.
        """
        size = await self.known_size(candidates)
        first = candidates[0] if candidates else None
        if first is not None and size is not None and first.source in self._ranges:
            return Head(size, self._ranges[first.source])
        failures: list[SourceUnavailable] = []
        for file in candidates:
            try:
                said = await self.by_name[file.source].file_head(file)
            except FileNotFoundUpstream:
                continue
            except SourceUnavailable as exc:
                failures.append(exc)
                continue
            self._ranges[file.source] = said.ranges
            if said.size is not None:
                self._sizes.set((file.source, file.sha256), said.size)
            return Head(size if size is not None else said.size, said.ranges)
        if failures:
            raise Unavailable(failures)
        raise FileNotFoundUpstream("no source has this file")

    async def known_size(self, candidates: Sequence[DistFile]) -> int | None:
        """The size of the file as listed, or as an upstream said it before (no request)."""
        listed = next((f.size for f in candidates if f.size is not None), None)
        if listed is not None:
            return listed
        for file in candidates:
            details, project = self.details.get(file.source), file_project_name(file.filename)
            if details is not None and project is not None:
                known = await details.refine(project, [file])
                if known and known[0].size is not None:
                    return known[0].size
        return next(
            (s for f in candidates if (s := self._sizes.get((f.source, f.sha256))) is not None),
            None,
        )

    async def delivered(self, sha256: str, allowed: Readable) -> bool:
        """May the cached bytes of `sha256` go to a reader of `allowed`: has a source it may
        read delivered them? A reader of every source (None) may also have a file that has no
        delivery record at all, one cached before the proxy kept them: it may read whatever any
        source delivered, and was served such files before (a restricted reader's source is
        asked to deliver the file first)."""
        readable = self.by_name.keys() if allowed is None else allowed
        if not self.deliveries.known(sha256).isdisjoint(readable):
            return True  # no I/O: what this process saw stays true
        if allowed is None and sha256 in self._unrecorded:
            return True
        recorded = await self.deliveries.sources(sha256)
        if recorded is not None:
            return not recorded.isdisjoint(readable)
        if allowed is None:
            self._unrecorded.set(sha256, None)
        return allowed is None

    async def verify(
        self, sha256: str, filename: str, candidates: Sequence[DistFile], size: int | None = None
    ) -> str:
        """Have a candidate deliver the file (downloaded and hashed, not kept) unless it did
        before, trying them in order; the source that did. `size`: the file's, as cached.

        Raises NotAsListed (the first whose bytes did not match) when none did,
        Unavailable when one that might could not be reached, else FileNotFoundUpstream.
        """
        failures: list[SourceUnavailable] = []
        forged: NotAsListed | None = None
        for file in candidates:
            source = self.by_name[file.source]
            try:
                await self.deliveries.verify(
                    sha256, file.source, filename, lambda s=source, f=file: s.open_file(f), size
                )
            except FileNotFoundUpstream:
                continue
            except SourceUnavailable as exc:
                failures.append(exc)
                continue
            except NotAsListed as exc:
                forged = forged or exc
                continue
            return file.source
        if forged is not None:
            raise forged
        if failures:
            raise Unavailable(failures)
        raise FileNotFoundUpstream("no source has this file")

    def _learn(self, file: DistFile, content_range: str | None) -> None:
        """What an answer to a range says of its source and of the file's size."""
        self._ranges[file.source] = content_range is not None
        total = (content_range or "").rpartition("/")[2]
        if total.isascii() and total.isdigit():
            self._sizes.set((file.source, file.sha256), int(total))

    def opener(self, candidates: Sequence[DistFile]) -> Opener:
        """`open_first(candidates)` for a download: once a candidate has served, reopening
        (to resume) asks that one only, so a reader who may read its source gets that
        source's bytes alone."""
        chosen = list(candidates)

        @asynccontextmanager
        async def opened() -> AsyncIterator[FileStream]:
            async with self.open_first(chosen) as stream:
                chosen[:] = [f for f in chosen if f.source == stream.source][:1]
                yield stream

        return opened

    @asynccontextmanager
    async def open_first(
        self, candidates: Sequence[DistFile], byte_range: tuple[int, int] | None = None
    ) -> AsyncIterator[FileStream]:
        """Stream the file from the first candidate that has it (the stream says which);
        `byte_range` (first and last byte) asks for that part of it: the stream's
        `content_range` says whether the upstream sent it alone (else it is the whole file).

        Raises FileNotFoundUpstream when none has it, Unavailable when one that might could not
        be reached.
        """
        spec = None if byte_range is None else "bytes={}-{}".format(*byte_range)
        failures: list[SourceUnavailable] = []
        for file in candidates:
            stack = AsyncExitStack()
            try:
                opening = self.by_name[file.source].open_file(file, spec)
                stream = await stack.enter_async_context(opening)
            except FileNotFoundUpstream:
                await stack.aclose()
                continue
            except SourceUnavailable as exc:
                failures.append(exc)
                await stack.aclose()
                continue
            if spec is not None:
                self._learn(file, stream.content_range)
            async with stack:
                yield replace(stream, source=file.source)
            return
        if failures:
            raise Unavailable(failures)
        raise FileNotFoundUpstream("no source has this file")
