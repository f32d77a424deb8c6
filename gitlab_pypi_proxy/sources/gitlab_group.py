"""A `gitlab_group` source: the PyPI registry of a GitLab group, every project in it that the
proxy's token may read. Uploads go to a project, never to a group.

What it shares with a project (the API calls, pages, PEP 700 details) is
gitlab_pypi_proxy.sources.gitlab."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import quote

import httpx2

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.errors import Refused
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage
from gitlab_pypi_proxy.names import normalize
from gitlab_pypi_proxy.sources.base import Context, Parts, RangeReader
from gitlab_pypi_proxy.sources.budget import Budget
from gitlab_pypi_proxy.sources.gitlab import GitLabApi, GitLabPages
from gitlab_pypi_proxy.sources.upstream import Head, Upstream
from gitlab_pypi_proxy.storage.details import DetailsStore

log = logging.getLogger("proxy.sources.gitlab")


class GitLabGroup:
    def __init__(
        self,
        config: SourceConfig,
        gitlab: GitLabConfig,
        upstream: Upstream,
        *,
        budget: Budget | None = None,
        details: DetailsStore | None = None,
        changed: Callable[[], Awaitable[None]] | None = None,
        auth: httpx2.Auth | None = None,
    ) -> None:
        root = f"{gitlab.api_url}/groups/{quote(config.target, safe='')}"
        self.api = GitLabApi(
            config,
            gitlab,
            upstream,
            root=root,
            pypi=f"{root}/-/packages/pypi",
            packages_url=f"{root}/packages",
            budget=budget,
            auth=auth,
        )
        self.pages = GitLabPages(self.api, details, changed)
        self.details = self.pages.details

    @classmethod
    def build(cls, config: SourceConfig, context: Context) -> Parts:
        source = cls(
            config,
            context.gitlab,
            context.upstream,
            budget=context.budget,
            details=context.details,
            changed=context.changed,
        )
        return Parts(
            source,
            owns_names=True,
            serves_ranges=True,
            probe=source.readable_with,
            packages=source,
            details=source.details,
        )

    @property
    def name(self) -> str:
        return self.api.name

    async def project_page(self, name: str) -> ProjectPage | None:
        return await self.pages.project_page(name)

    async def project_names(self) -> frozenset[str]:
        """The names of every PyPI package of the group's projects (the Packages API: a group
        has no PyPI root index)."""
        try:
            return frozenset([normalize(p["name"]) async for p in self.api.packages()])
        except Refused as exc:
            log.warning("%s; listing no names", exc)
            return frozenset()

    def file_for(self, sha256: str, filename: str) -> DistFile:
        return self.api.file_for(sha256, filename)

    def open_file(
        self, file: DistFile, byte_range: str | None = None
    ) -> AbstractAsyncContextManager[FileStream]:
        return self.api.open_file(file, byte_range)

    async def file_head(self, file: DistFile) -> Head:
        return await self.api.file_head(file)

    def range_reader(self, file: DistFile, *, background: bool) -> RangeReader:
        return self.api.range_reader(file, background=background)

    def packages(self, **filters: str) -> AsyncIterator[dict[str, Any]]:
        return self.api.packages(**filters)

    async def readable_with(self, auth: httpx2.Auth) -> bool:
        """May these (passthrough) credentials read the group? A group shows each caller only
        the projects it may read, so the credentials must see as many PyPI packages in it as
        the proxy does (fail closed: the proxy's view is shared). Raises SourceUnavailable."""
        params: dict[str, str | int] = {"package_type": "pypi", "per_page": 1}
        theirs, ours = await asyncio.gather(
            self.api.upstream.get(self.name, self.api.packages_url, auth=auth, params=params),
            self.api.get(self.api.packages_url, params),
        )
        total = theirs.headers.get("x-total")
        return (
            theirs.status_code == ours.status_code == 200
            and total is not None
            and total == ours.headers.get("x-total")
        )
