"""What a page says about each file beyond its link.

- `WithDetails` (around one GitLab source's cached answers): PEP 700 details (size, upload
  time) that the source learnt in the background since its page was cached. A page asked of the
  upstream for this very answer carries every detail known when it was fetched already.
- `Annotated` (around the index): PEP 658 core metadata (`core-metadata`), advertised only once
  the proxy holds it (gitlab_pypi_proxy.index.core_metadata obtains it, in the background for the
  newest wheels of every page served).
"""

from dataclasses import replace

from gitlab_pypi_proxy.index.core_metadata import CoreMetadata
from gitlab_pypi_proxy.index.index_protocol import Answer, Index, Readable, SourceAnswers
from gitlab_pypi_proxy.model import ProjectList, ProjectPage
from gitlab_pypi_proxy.sources.base import Details


class WithDetails:
    def __init__(self, inner: SourceAnswers, details: Details) -> None:
        self.inner, self.details = inner, details

    @property
    def name(self) -> str:
        return self.inner.name

    async def page(self, name: str) -> Answer[ProjectPage | None]:
        answer = await self.inner.page(name)
        page = answer.value
        if page is None or answer.loaded:
            return answer
        files = await self.details.refine(page.name, page.files)
        if files is None:
            return answer
        return replace(answer, value=replace(page, files=tuple(files)))

    async def names(self) -> Answer[frozenset[str]]:
        return await self.inner.names()


class Annotated:
    def __init__(self, inner: Index, metadata: CoreMetadata) -> None:
        self.inner, self.metadata = inner, metadata

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        return await self.metadata.annotated(await self.inner.project_page(name, allowed))

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        return await self.inner.project_list(allowed)

    async def check_file(self, sha256: str, filename: str, allowed: Readable = None) -> None:
        await self.inner.check_file(sha256, filename, allowed)
