"""A `gitlab_group` source: the PyPI registry of a GitLab group, every project in it that the
proxy's token may read. Uploads go to a project, never to a group.

What it shares with a project (the API calls, pages, PEP 700 details) is
gitlab_pypi_proxy.sources.gitlab. A group has no PyPI root index: the shared poll for names
published to GitLab (gitlab_pypi_proxy.index.name_poll) reads its Packages API newest first, one
page, and the next ones only while every package on a page is new (more than 100 published since
the last poll), at most POLL_PAGES."""

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
from gitlab_pypi_proxy.sources.base import Context, Parts, RangeReader, Seen
from gitlab_pypi_proxy.sources.budget import Budget
from gitlab_pypi_proxy.sources.gitlab import GitLabApi, GitLabPages
from gitlab_pypi_proxy.sources.gitlab_details import PER_PAGE
from gitlab_pypi_proxy.sources.upstream import Head, Upstream
from gitlab_pypi_proxy.storage.details import DetailsStore

log = logging.getLogger("proxy.sources.gitlab")

POLL_PAGES = 10  # Packages API pages one poll reads at most: 1,000 packages published meanwhile


class GitLabGroup:
    def __init__(
        self,
        config: SourceConfig,
        gitlab: GitLabConfig,
        upstream: Upstream,
        *,
        budget: Budget | None = None,
        details: DetailsStore | None = None,
        changed: Callable[[str], Awaitable[None]] | None = None,
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
            watched=source,
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

    async def poll(self, seen: Seen | None) -> tuple[Seen, frozenset[str]]:
        """The names of the packages newer than `seen`'s newest (of those on the first page,
        when there is no `seen`). Raises Refused when GitLab will not list, SourceUnavailable."""
        params: dict[str, str | int] = {
            "package_type": "pypi",
            "order_by": "created_at",
            "sort": "desc",
        }
        newest = seen.newest if seen is not None else None
        names: set[str] = set()
        top = newest or 0
        page = 1
        for _ in range(POLL_PAGES):
            listing = await self.api.list_page(self.api.packages_url, params, page)
            packages = [p for p in listing.items if _is_package(p)]
            new = [p for p in packages if newest is None or p["id"] > newest]
            names |= {normalize(p["name"]) for p in new}
            top = max([top, *(p["id"] for p in packages)])
            more = newest is not None and new and len(new) == len(packages)  # all new: go on
            if not more or listing.next_page is None:
                break
            page = listing.next_page
        else:
            log.warning(
                "source %s: more than %d packages published since the last poll; the names of "
                'the older ones are seen once their "not here" expires',
                self.name,
                POLL_PAGES * PER_PAGE,
            )
        return Seen(newest=top), frozenset(names)

    def saw(self, seen: Seen) -> None:
        pass  # a group keeps no names between polls

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


def _is_package(item: object) -> bool:
    """A Packages API entity with what a poll reads (an upstream answer: checked)."""
    return (
        isinstance(item, dict)
        and isinstance(item.get("id"), int)
        and isinstance(item.get("name"), str)
    )
