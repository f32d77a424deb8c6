"""Several sources asked at once and merged in priority order: a file name is listed once, from
the first source that has it (another source's file of that name with other bytes is logged as a
conflict and left out). The merged page is as fresh as the least fresh answer asked, and stale
when any answer was, or when a source could not answer at all.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from gitlab_pypi_proxy.aio import off_loop
from gitlab_pypi_proxy.errors import NotFound, Offline, SourceUnavailable, Unavailable
from gitlab_pypi_proxy.index.index_protocol import Answer, Readable, SourceAnswers
from gitlab_pypi_proxy.model import DistFile, ProjectList, ProjectPage
from gitlab_pypi_proxy.names import file_versions

log = logging.getLogger("proxy.index")


@dataclass
class Gathered:
    """The answers of several sources about one name."""

    answers: list[Answer[ProjectPage | None]] = field(default_factory=list)
    failures: list[SourceUnavailable] = field(default_factory=list)
    offline: bool = False  # some source has nothing kept, and the proxy may not ask it

    @property
    def found(self) -> list[Answer[ProjectPage | None]]:
        return [a for a in self.answers if a.value is not None]

    def nothing_found(self, name: str) -> NoReturn:
        """Why none of the sources gave `name`: some could not say, some may not be asked
        offline, or none has it."""
        if self.failures:
            raise Unavailable(self.failures)
        if self.offline:
            raise not_cached(name)
        raise NotFound(f"no source has a project named {name}")


def not_cached(name: str) -> Offline:
    return Offline(f"the proxy is offline and has no cached copy of {name}")


class Merged:
    def __init__(self, sources: Sequence[SourceAnswers]) -> None:
        self.sources = list(sources)  # in priority order

    def readable(self, allowed: Readable) -> list[SourceAnswers]:
        return [s for s in self.sources if allowed is None or s.name in allowed]

    async def gather(self, name: str, sources: Sequence[SourceAnswers]) -> Gathered:
        """What each of `sources` says about `name`, asked at once."""
        answers = await asyncio.gather(*(s.page(name) for s in sources), return_exceptions=True)
        gathered = Gathered()
        for answer in answers:
            if isinstance(answer, SourceUnavailable):
                gathered.failures.append(answer)
            elif isinstance(answer, Offline):
                gathered.offline = True
            elif isinstance(answer, BaseException):
                raise answer
            else:
                gathered.answers.append(answer)
        return gathered

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        """The merged page of `name` over the readable sources."""
        gathered = await self.gather(name, self.readable(allowed))
        if gathered.found:
            partial = bool(gathered.failures or gathered.offline)
            return await merged(name, gathered.found, gathered.answers, partial=partial)
        gathered.nothing_found(name)

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        """The union of the names of every readable source (stale if some could not answer)."""
        sources = self.readable(allowed)
        answers = await asyncio.gather(*(s.names() for s in sources), return_exceptions=True)
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


async def merged(
    name: str,
    found: Sequence[Answer[ProjectPage | None]],
    asked: Sequence[Answer[ProjectPage | None]],
    *,
    partial: bool,
) -> ProjectPage:
    """`merge`, in a thread when the pages list many files."""
    files = sum(len(a.value.files) for a in found if a.value is not None)
    return await off_loop(files, lambda: merge(name, found, asked, partial=partial))


def merge(
    name: str,
    found: Sequence[Answer[ProjectPage | None]],
    asked: Sequence[Answer[ProjectPage | None]],
    *,
    partial: bool,
) -> ProjectPage:
    """Merge the answers that found `name`; `asked` (every answer) bounds the freshness."""
    files: dict[str, DistFile] = {}
    pages = [a.value for a in found if a.value is not None]
    for page in pages:
        for file in page.files:
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
    sources = tuple(s for page in pages for s in page.sources)
    stale = partial or any(a.stale for a in found)
    fresh_until = 0.0 if stale else min(a.fresh_until for a in asked)
    # PEP 792: the first source that quarantines the project, else the first that says a status
    said = sorted((p for p in pages if p.status), key=lambda p: p.status != "quarantined")
    return ProjectPage(
        name=name,
        files=tuple(files.values()),
        sources=sources,
        stale=stale,
        fresh_until=fresh_until,
        status=said[0].status if said else None,
        status_reason=said[0].status_reason if said else None,
        versions=merged_versions(pages),
    )


def merged_versions(pages: Sequence[ProjectPage]) -> tuple[str, ...] | None:
    """PEP 700 `versions` of merged pages: the union of what each source lists (its files'
    versions where it lists none); None when no source lists any."""
    if all(p.versions is None for p in pages):
        return None
    union: set[str] = set()
    for page in pages:
        given = page.versions
        union |= set(given) if given is not None else file_versions(f.filename for f in page.files)
    return tuple(sorted(union))
