"""What a page says about each file beyond its link: PEP 700 details (size, upload time) that a
GitLab source learnt in the background since its page was cached, and PEP 658 core metadata
(`core-metadata`), advertised only once the proxy holds it (proxy.index.core_metadata obtains
it, in the background for the newest wheels of every page served)."""

from collections.abc import Mapping
from dataclasses import replace

from proxy.index.base import Index, Readable
from proxy.index.core_metadata import CoreMetadata
from proxy.model import DistFile, ProjectList, ProjectPage
from proxy.sources.base import Details


class Annotated:
    def __init__(
        self, inner: Index, details: Mapping[str, Details], metadata: CoreMetadata
    ) -> None:
        self.inner, self.metadata = inner, metadata
        self.details = dict(details)  # per GitLab source: its PEP 700 details

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        page = await self.inner.project_page(name, allowed)
        page = await self._with_details(page)
        return await self.metadata.annotated(page)

    async def _with_details(self, page: ProjectPage) -> ProjectPage:
        by_source: dict[str, list[DistFile]] = {}
        for file in page.files:
            if file.size is None and file.source in self.details:
                by_source.setdefault(file.source, []).append(file)
        learnt: dict[tuple[str, str], DistFile] = {}
        for source, files in by_source.items():
            refined = await self.details[source].refine(page.name, files)
            for file in refined or ():
                learnt[(file.filename, file.sha256)] = file
        if not learnt:
            return page
        files = tuple(learnt.get((f.filename, f.sha256), f) for f in page.files)
        return replace(page, files=files)

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        return await self.inner.project_list(allowed)

    async def check_file(self, sha256: str, filename: str, allowed: Readable = None) -> None:
        await self.inner.check_file(sha256, filename, allowed)
