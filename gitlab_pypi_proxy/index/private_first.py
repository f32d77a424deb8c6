"""GitLab sources own their names; public (`url`) sources answer only for the rest.

A public source is asked only for a name no private source has (none the reader may not read
either: that is a 404 for this reader, never a public package), and never while a private source
that might own it cannot answer (fail closed), unless its `allow_public` lists the name. The
first public source that has the name answers alone; a private name a public source also has is
logged in the background (gitlab_pypi_proxy.index.shadows). The read check for files is here
too: a restricted reader may have a file only if a source it may read lists it. Ownership holds
for file URLs as for pages: a public file of a private name is not served, however the client
came by its URL. Which files a private name has is remembered per worker while fresh."""

import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.errors import (
    FailClosed,
    NotFound,
    Offline,
    SourceUnavailable,
    Unavailable,
)
from gitlab_pypi_proxy.index.cached import CachedSource
from gitlab_pypi_proxy.index.index_protocol import Readable
from gitlab_pypi_proxy.index.merged import Gathered, Merged, merged, not_cached
from gitlab_pypi_proxy.index.shadows import ShadowCheck
from gitlab_pypi_proxy.model import ProjectList, ProjectPage
from gitlab_pypi_proxy.names import file_project_name
from gitlab_pypi_proxy.storage.locations import FileLocations

log = logging.getLogger("proxy.index")

_NAMES_REMEMBERED = 10_000
# (sha256, file name) pairs remembered over all names, ~300 bytes each: a name with more files
# than that (a long history) is read from its records for each of its file URLs instead
_FILES_REMEMBERED = 4096
PrivateFiles = frozenset[tuple[str, str]] | None  # (sha256, file name); None: no private source


def _files(kept: tuple[Hashable, PrivateFiles]) -> int:
    return len(kept[1] or ())


class PrivateFirst:
    def __init__(
        self,
        private: Merged,
        public: Sequence[CachedSource],
        locations: FileLocations,
        shadows: ShadowCheck,
        *,
        allow_public: Mapping[str, frozenset[str]] | None = None,
        generation: Callable[[], Hashable] = lambda: None,
    ) -> None:
        self.private, self.public = private, Merged(public)
        self.public_sources = list(public)  # for the shadow check, which asks each
        self.locations, self.shadows = locations, shadows
        # per private source: the names public sources may answer while it is down
        self.allow_public = dict(allow_public or {})
        self.generation = generation  # moves whenever any worker announces a change
        # per name: (generation, its private files) while the private answers are fresh
        self._private_files: TTLMemo[str, tuple[Hashable, PrivateFiles]] = TTLMemo(
            _NAMES_REMEMBERED, clock=time.time, weigh=_files, max_weight=_FILES_REMEMBERED
        )

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        private = self.private.readable(allowed)
        public = [s for s in self.public_sources if allowed is None or s.name in allowed]
        mine = await self.private.gather(name, private)
        if mine.found:
            if public:
                self.shadows.check(name, public)
            partial = bool(mine.failures or mine.offline)
            return await merged(name, mine.found, mine.answers, partial=partial)
        failures, offline = mine.failures, mine.offline
        if public:
            # Ownership counts every private source, also those this reader may not read.
            hidden = [s for s in self.private.sources if s not in private]
            theirs = await self.private.gather(name, hidden)
            if theirs.found:
                raise NotFound(f"no source has a project named {name}")
            failures, offline = failures + theirs.failures, offline or theirs.offline
        if failures and public:
            self._fail_closed(name, failures)
        elif failures:
            raise Unavailable(failures)
        if offline:
            raise not_cached(name)
        others = await self.public.gather(name, public)
        if others.found:
            asked = mine.answers + others.answers
            return await merged(name, others.found[:1], asked, partial=False)
        others.nothing_found(name)

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        """The names of the readable private sources. Public sources are left out: a public
        index's root can hold hundreds of thousands of names, and no installer needs them
        listed to ask for one."""
        return await self.private.project_list(allowed)

    def _fail_closed(self, name: str, failures: Sequence[SourceUnavailable]) -> None:
        """Raise FailClosed unless every source that could not say lets the public index
        answer `name` meanwhile (`allow_public`)."""
        closed = [f for f in failures if name not in self.allow_public.get(f.source, frozenset())]
        if closed:
            raise FailClosed(name, closed)

    async def check_file(self, sha256: str, filename: str, allowed: Readable = None) -> None:
        derived = filename.removesuffix(".metadata").removesuffix(".provenance")
        if not await self._may_read(sha256, derived, allowed):
            raise NotFound(f"no readable source offers {filename}")
        if self.public_sources:
            await self._not_public_under_a_private_name(sha256, derived)

    async def _not_public_under_a_private_name(self, sha256: str, filename: str) -> None:
        """Raise NotFound for a public index's file of a name a private source has: one that no
        private source lists but a public one does. A file no page listed yet (a GitLab file
        asked by digest alone) can only come from a private source: it passes."""
        project = file_project_name(filename)
        if project is None:
            return
        private = await self._files_of_private_name(project)
        if private is None or (sha256, filename) in private:
            return
        listed = await self.locations.of(sha256)
        by = {f.source for f in listed if f.filename == filename}
        if by & {s.name for s in self.private.sources} or not by:
            return
        raise NotFound(
            f"{filename} is a public index's file of {project}, a name a GitLab source has: "
            "public files are not served for it"
        )

    async def _files_of_private_name(self, name: str) -> PrivateFiles:
        """The files the private sources list for `name`, or None when none of them has it.
        Raises FailClosed while one that might have it cannot say (as a page would)."""
        generation = self.generation()  # read before the answers, so a racing change wins
        kept = self._private_files.get(name)
        if kept is not None and kept[0] == generation:
            return kept[1]
        mine: Gathered = await self.private.gather(name, self.private.sources)
        if mine.failures:
            self._fail_closed(name, mine.failures)
        files: PrivateFiles = None
        if mine.found:
            files = frozenset(
                (f.sha256, f.filename) for a in mine.found if a.value for f in a.value.files
            )
        fresh_until = min((a.fresh_until for a in mine.answers), default=0.0)
        if not (mine.failures or mine.offline) and fresh_until > time.time():
            self._private_files.set(name, (generation, files), until=fresh_until)
        return files

    async def _may_read(self, sha256: str, filename: str, readable: Readable) -> bool:
        """May a reader of `readable` sources (None: every source) have this file, or anything
        derived from it? A restricted reader only if a source it may read lists it."""
        if readable is None:
            return True
        listed = await self.locations.of(sha256)
        if any(f.source in readable and f.filename == filename for f in listed):
            return True
        project = file_project_name(filename)
        if project is None:
            return False
        try:
            page = await self.project_page(project, readable)
        except (NotFound, Unavailable, Offline) as exc:  # fail closed
            log.debug("cannot check %s for a restricted reader: %s", filename, exc)
            return False
        return any(f.sha256 == sha256 and f.filename == filename for f in page.files)
