"""Versions marked yanked as PEP 592 says (resolvers skip them, a build that pins one exactly still
installs it), because GitLab cannot yank:

- by the configuration (`[sources.yanked]`): that source's files of those versions;
- by an operator through the API (`PUT /-/yank/<name>/<version>`, `OperatorYanks`): every file
  of that version, with the operator's reason. They are one shared JSON value of the coordinator
  (gitlab_pypi_proxy.storage.shared_json: a file under the cache directory, Redis in a cluster),
  so every worker and replica lists them from the moment the yank is announced, and they outlive
  restarts; `DELETE` on the same path takes one back.

Applied when a page is served, so a change shows with the next page.
"""

import time
from collections.abc import Mapping
from dataclasses import replace

from packaging.utils import canonicalize_version

from gitlab_pypi_proxy.aio import off_loop
from gitlab_pypi_proxy.index.index_protocol import Index, Readable
from gitlab_pypi_proxy.model import DistFile, ProjectList, ProjectPage
from gitlab_pypi_proxy.names import file_version
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.shared_json import Document, SharedJson

VALUE = "operator-yanks"
MAX_BYTES = 2**20  # some thousands of yanks; past it a yank is refused, nothing is dropped


class OperatorYanks:
    """The operator's yanks: name → canonical version → {reason, version, by, at}."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.shared = SharedJson(coordinator, VALUE, MAX_BYTES)

    async def current(self) -> Document:
        return await self.shared.current()

    async def yank(self, name: str, version: str, reason: str, by: str) -> None:
        """Yank `version` of normalized `name` (raises TooLarge when the value is full)."""
        entry = {"reason": reason, "version": version, "by": by, "at": time.time()}

        def change(document: Document) -> Document:
            versions = dict(document.get(name) or {})
            versions[canonicalize_version(version)] = entry
            return {**document, name: versions}

        await self.shared.change(change)

    async def unyank(self, name: str, version: str) -> bool:
        """Take the yank back; False when there was none."""
        key = canonicalize_version(version)
        found = False

        def change(document: Document) -> Document:
            nonlocal found
            versions = dict(document.get(name) or {})
            found = versions.pop(key, None) is not None
            rest = {n: v for n, v in document.items() if n != name}
            return {**rest, name: versions} if versions else rest

        await self.shared.change(change)
        return found


def _reason(file: DistFile, reason: str) -> str | bool:
    """The operator's reason, with one the file was listed with already (a hold, an advisory)."""
    said = file.yanked if isinstance(file.yanked, str) and file.yanked else None
    return "; ".join(r for r in (reason, said) if r) or True


class Yanked:
    def __init__(
        self,
        inner: Index,
        yanked: Mapping[str, Mapping[str, frozenset[str]]],
        operator: OperatorYanks | None = None,
    ) -> None:
        self.inner, self.operator = inner, operator
        self.yanked = {s: v for s, v in yanked.items() if v}  # source → name → versions

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        page = await self.inner.project_page(name, allowed)
        marked = {s: versions.get(name) for s, versions in self.yanked.items()}
        by_operator = (await self.operator.current()).get(name) if self.operator else None
        if not any(marked.values()) and not by_operator:
            return page
        return await off_loop(len(page.files), _marked, page, marked, by_operator or {})

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        return await self.inner.project_list(allowed)

    async def check_file(self, sha256: str, filename: str, allowed: Readable = None) -> None:
        await self.inner.check_file(sha256, filename, allowed)


def _marked(
    page: ProjectPage, marked: Mapping[str, frozenset[str] | None], by_operator: Document
) -> ProjectPage:
    """The page with the configured yanks (`marked`: source → versions) and the operator's
    (canonical version → yank) marked."""
    files = []
    for file in page.files:
        version = file_version(file.filename)
        yank = by_operator.get(canonicalize_version(version)) if by_operator and version else None
        configured = marked.get(file.source)
        if isinstance(yank, dict):
            file = replace(file, yanked=_reason(file, str(yank.get("reason") or "")))
        elif configured and version in configured:
            file = replace(file, yanked=file.yanked or True)  # an advisory's reason stays
        files.append(file)
    return replace(page, files=tuple(files))
