"""The index a client sees: several sources merged, each answer cached, ownership kept.

GitLab sources are asked concurrently and merged in priority order; a file name is listed once,
from the first source that has it. Public (`url`) sources are asked only for names that no GitLab
source owns, and never when a GitLab source that might own the name cannot answer (fail closed):
a rate-limited source cannot answer either. A "not here" is cached like a page (for the cache's
negative TTL), so a name no GitLab source has costs one request per source per negative TTL.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from proxy.aio import TaskSet
from proxy.errors import (
    FailClosed,
    FileNotFoundUpstream,
    NotFound,
    Offline,
    SourceUnavailable,
    Unavailable,
)
from proxy.index.shadows import ShadowCheck
from proxy.model import DistFile, ProjectList, ProjectPage
from proxy.names import file_project_name, file_version
from proxy.sources.base import Details, FileStream, Source
from proxy.storage.pages import PageCache, Result

log = logging.getLogger("proxy.index")


class Index:
    def __init__(
        self,
        sources: Sequence[Source],
        public: Sequence[Source],
        pages: PageCache,
        *,
        allow_public: Mapping[str, frozenset[str]] | None = None,
        details: Mapping[str, Details] | None = None,
        yanked: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
    ) -> None:
        self.sources = list(sources)  # GitLab sources, in priority order
        self.public = list(public)  # url sources, asked only for names no GitLab source owns
        self.pages = pages
        # per GitLab source: the names public sources may answer while it is down
        self.allow_public = dict(allow_public or {})
        self.details = dict(details or {})  # per GitLab source: its PEP 700 details
        self.yanked = dict(yanked or {})  # per GitLab source: name → versions marked yanked
        self.by_name: dict[str, Source] = {s.name: s for s in [*self.sources, *self.public]}
        self.shadows = ShadowCheck(pages)
        self._tasks = TaskSet(log, "remembering where files are")

    async def close(self) -> None:
        """Finish the background work (so the caches can be closed after it)."""
        await self._tasks.settled()
        await self.shadows.tasks.close()

    def _allow_public(self, source: str) -> frozenset[str]:
        return self.allow_public.get(source, frozenset())

    def readable(self, allowed: frozenset[str] | None) -> tuple[list[Source], list[Source]]:
        def keep(sources: list[Source]) -> list[Source]:
            return [s for s in sources if allowed is None or s.name in allowed]

        return keep(self.sources), keep(self.public)

    async def project_page(self, name: str, allowed: frozenset[str] | None = None) -> ProjectPage:
        """The merged page of normalized `name` over the sources in `allowed` (None: all)."""
        private, public = self.readable(allowed)
        results, failures, offline = await self._ask(private, name)
        found = [r for r in results if r.value is not None]
        if found:
            if public:
                self.shadows.check(name, public)
            return self._merge(name, found, results, partial=bool(failures or offline))
        if public:
            # Ownership counts every GitLab source, also those this caller may not read: a name
            # one of them has is a 404 for this caller, never a public package.
            hidden = [s for s in self.sources if s not in private]
            hidden_results, hidden_failures, hidden_offline = await self._ask(hidden, name)
            if any(r.value is not None for r in hidden_results):
                raise NotFound(f"no source has a project named {name}")
            failures += hidden_failures
            offline = offline or hidden_offline
        if failures and public:
            closed = [f for f in failures if name not in self._allow_public(f.source)]
            if closed:
                raise FailClosed(name, closed)
        elif failures:
            raise Unavailable(failures)
        if offline:
            raise Offline(f"the proxy is offline and has no cached copy of {name}")
        public_results, failures, offline = await self._ask(public, name)
        found = [r for r in public_results if r.value is not None]
        if found:
            return self._merge(name, found[:1], results + public_results, partial=False)
        if failures:
            raise Unavailable(failures)
        if offline:
            raise Offline(f"the proxy is offline and has no cached copy of {name}")
        raise NotFound(f"no source has a project named {name}")

    async def _ask(
        self, sources: Sequence[Source], name: str
    ) -> tuple[list[Result], list[SourceUnavailable], bool]:
        answers = await asyncio.gather(
            *(self._page(s, name) for s in sources), return_exceptions=True
        )
        results: list[Result] = []
        failures: list[SourceUnavailable] = []
        offline = False
        for answer in answers:
            if isinstance(answer, SourceUnavailable):
                failures.append(answer)
            elif isinstance(answer, Offline):
                offline = True
            elif isinstance(answer, BaseException):
                raise answer
            else:
                results.append(answer)
        return results, failures, offline

    async def _page(self, source: Source, name: str) -> Result:
        fetched: list[ProjectPage] = []

        async def load() -> ProjectPage | None:
            page = await source.project_page(name)
            if page is not None and page.files:
                first = page.files[0]
                if source.file_for(first.sha256, first.filename) is None:
                    await self.pages.remember_files(page.files)  # found through its page only
                else:
                    fetched.append(page)
            return page

        result = await self.pages.fetch(("page", source.name, name), load)
        if result.value is not None and (yanked := self.yanked.get(source.name, {}).get(name)):
            result = replace(result, value=_yank(result.value, yanked))
        if fetched:  # a GitLab source finds a file by its digest meanwhile: off the client's time
            self._tasks.spawn(self.pages.remember_files(fetched[0].files))
            return result  # fetched just now, with every detail known
        # A GitLab source learns PEP 700 details in the background, after its page is cached.
        details = self.details.get(source.name)
        if details is not None and result.value is not None:
            page = result.value
            files = await details.refine(page.name, page.files)
            if files is not None:
                result = replace(result, value=replace(page, files=tuple(files)))
        return result

    def _merge(
        self, name: str, results: Sequence[Result], asked: Sequence[Result], *, partial: bool
    ) -> ProjectPage:
        """Merge the answers that found `name`; `asked` (every answer) bounds the freshness."""
        files: dict[str, DistFile] = {}
        for result in results:
            for file in result.value.files:
                first = files.setdefault(file.filename, file)
                if first.sha256 != file.sha256:
                    log.warning(
                        "conflict: %s is %s in source %s but %s in source %s; serving the first",
                        file.filename,
                        first.sha256,
                        first.source,
                        file.sha256,
                        file.source,
                    )
        sources = tuple(s for r in results for s in r.value.sources)
        stale = partial or any(r.stale for r in results)
        fresh_until = 0.0 if stale else min(r.fresh_until for r in asked)
        return ProjectPage(
            name=name,
            files=tuple(files.values()),
            sources=sources,
            stale=stale,
            fresh_until=fresh_until,
        )

    async def project_list(self, allowed: frozenset[str] | None = None) -> ProjectList:
        """The union of the names of every readable GitLab source.

        Public sources are left out: a public index's root can hold hundreds of thousands of
        names, and no installer needs them listed to ask for one.
        """
        sources, _ = self.readable(allowed)
        answers = await asyncio.gather(
            *(self.pages.fetch(("names", s.name), s.project_names) for s in sources),
            return_exceptions=True,
        )
        names: set[str] = set()
        failures = []
        stale = False
        fresh_until = float("inf")
        for answer in answers:
            if isinstance(answer, SourceUnavailable | Offline):
                failures.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                names |= answer.value
                stale = stale or answer.stale
                fresh_until = min(fresh_until, answer.fresh_until)
        if failures and len(failures) == len(sources):
            unavailable = [f for f in failures if isinstance(f, SourceUnavailable)]
            if unavailable:
                raise Unavailable(unavailable)
            raise Offline("the proxy is offline and has no cached project list")
        stale = stale or bool(failures)
        return ProjectList(
            names=frozenset(names), stale=stale, fresh_until=0.0 if stale else fresh_until
        )

    async def locate(
        self, sha256: str, filename: str, allowed: frozenset[str] | None = None
    ) -> list[DistFile]:
        """Where a readable source offers this file, most likely first.

        Sources whose pages listed it come first (a GitLab source's page, once where its files
        are has been remembered, in the background); then every readable GitLab source, which
        can be asked by digest alone, so a file URL works even if no page was ever fetched.
        """
        private, public = self.readable(allowed)
        readable = {s.name for s in [*private, *public]}
        listed = await self.pages.file_locations(sha256)
        candidates = [f for f in listed if f.source in readable and f.filename == filename]
        seen = {f.source for f in candidates}
        candidates += [
            f
            for s in private
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


def _yank(page: ProjectPage, versions: frozenset[str]) -> ProjectPage:
    """The page with the files of `versions` (configured, GitLab cannot yank) marked yanked."""
    files = tuple(
        replace(f, yanked=True) if file_version(f.filename) in versions else f for f in page.files
    )
    return replace(page, files=files)
