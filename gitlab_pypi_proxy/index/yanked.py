"""Versions marked yanked in the configuration (`[sources.yanked]`: GitLab cannot yank), as PEP 592
says: resolvers skip them, a build that pins one exactly still installs it. Applied when a page
is served, so a change of configuration shows with the next page."""

from collections.abc import Mapping
from dataclasses import replace

from gitlab_pypi_proxy.aio import off_loop
from gitlab_pypi_proxy.index.base import Index, Readable
from gitlab_pypi_proxy.model import ProjectList, ProjectPage
from gitlab_pypi_proxy.names import file_version


class Yanked:
    def __init__(self, inner: Index, yanked: Mapping[str, Mapping[str, frozenset[str]]]) -> None:
        self.inner = inner
        self.yanked = {s: v for s, v in yanked.items() if v}  # source → name → versions

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        page = await self.inner.project_page(name, allowed)
        marked = {s: versions.get(name) for s, versions in self.yanked.items()}
        if not any(marked.values()):
            return page
        return await off_loop(len(page.files), _marked, page, marked)

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        return await self.inner.project_list(allowed)

    async def check_file(self, sha256: str, filename: str, allowed: Readable = None) -> None:
        await self.inner.check_file(sha256, filename, allowed)


def _marked(page: ProjectPage, marked: Mapping[str, frozenset[str] | None]) -> ProjectPage:
    files = tuple(
        replace(f, yanked=f.yanked or True)  # an advisory's reason, if any, stays
        if (versions := marked.get(f.source)) and file_version(f.filename) in versions
        else f
        for f in page.files
    )
    return replace(page, files=files)
