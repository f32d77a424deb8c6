"""A GitLab project's or group's PyPI registry as a source: pages, files, access probes, uploads."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx2

from proxy.config import GitLabConfig, SourceConfig
from proxy.errors import RateLimited, Refused, SourceUnavailable
from proxy.model import DistFile, ProjectPage
from proxy.names import file_version, normalize
from proxy.sources.base import FileStream
from proxy.sources.budget import Budget
from proxy.sources.gitlab_details import PER_PAGE, FileDetails, Listing
from proxy.sources.multipart import multipart_body
from proxy.sources.simple_html import parse_project_names, parse_project_page
from proxy.sources.upstream import Upstream
from proxy.storage.details import DetailsStore

log = logging.getLogger("proxy.sources.gitlab")

# The multipart fields GitLab's upload endpoint reads; it ignores the rest of what twine sends.
UPLOAD_FIELDS = (
    "name",
    "version",
    "requires_python",
    "md5_digest",
    "sha256_digest",
    "metadata_version",
    "author_email",
    "description",
    "description_content_type",
    "summary",
    "keywords",
)
_API_HINT = " (the token needs the read_api scope and read access to the project or group)"
_PAGES_AT_ONCE = 8  # Packages API pages asked at once when listing everything


def _page_number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@dataclass(frozen=True)
class UploadAnswer:
    status: int
    message: str  # GitLab's own "message", e.g. "400 Bad request - ..."


class GitLabSource:
    """One `gitlab_project` or `gitlab_group` source.

    GitLab answers a name it lacks with a 302 to the public index: a page request never follows
    redirects, and any 3xx means "not here". File links come back on GitLab's external host, so
    they are rebuilt on the configured API URL, where the proxy's credentials belong. Every
    request sent with the proxy's credentials is spent from the shared GitLab `budget`.
    """

    def __init__(
        self,
        config: SourceConfig,
        gitlab: GitLabConfig,
        upstream: Upstream,
        auth: httpx2.Auth | None = None,
        *,
        budget: Budget | None = None,
        details: DetailsStore | None = None,
        changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.upstream = upstream
        self.auth = auth or (
            httpx2.BasicAuth(gitlab.username, gitlab.token) if gitlab.token else None
        )
        encoded = quote(config.target, safe="")
        self.api = gitlab.api_url
        self.timeout = gitlab.timeout
        self.upload_timeout = gitlab.upload_timeout
        if config.kind == "gitlab_project":
            self.base = f"{self.api}/projects/{encoded}/packages/pypi"
            self.packages_url = f"{self.api}/projects/{encoded}/packages"
        else:
            self.base = f"{self.api}/groups/{encoded}/-/packages/pypi"
            self.packages_url = f"{self.api}/groups/{encoded}/packages"
        self.budget = budget or Budget(gitlab.max_requests_per_minute)
        self.details = FileDetails(
            self.name,
            self._listing,
            self._package_files,
            details or DetailsStore(None),
            changed,
        )

    def _file_url(self, sha256: str, filename: str) -> str:
        return f"{self.base}/files/{sha256}/{quote(filename)}"

    def _refused(self, what: str, response: httpx2.Response) -> None:
        level = logging.DEBUG if response.status_code in (302, 404) else logging.WARNING
        log.log(level, "source %s: %s answered HTTP %s", self.name, what, response.status_code)

    async def _get(
        self, url: str, params: dict[str, str | int] | None = None, *, background: bool = False
    ) -> httpx2.Response:
        """GET with the proxy's credentials, spent from the budget. A client's request raises
        RateLimited when GitLab or the budget will not have it now; background work and a
        patient budget (prefetch) wait and ask again."""
        while True:
            try:
                async with self.budget.request(self.name, background=background):
                    return await self.upstream.get(self.name, url, auth=self.auth, params=params)
            except RateLimited:
                if not self.budget.waits(background):
                    raise

    @asynccontextmanager
    async def stream(
        self, url: str, *, headers: dict[str, str] | None = None, background: bool = False
    ) -> AsyncIterator[httpx2.Response]:
        """`Upstream.stream` with the proxy's credentials, spent from the budget like `_get`."""
        while True:
            answered = False
            try:
                async with (
                    self.budget.request(self.name, background=background),
                    self.upstream.stream(
                        self.name, url, auth=self.auth, headers=headers
                    ) as response,
                ):
                    answered = True
                    yield response
                return
            except RateLimited:
                if answered or not self.budget.waits(background):
                    raise

    async def project_page(self, name: str) -> ProjectPage | None:
        url = f"{self.base}/simple/{name}"
        response = await self._get(url)
        if response.status_code != 200:
            self._refused(f"page {name}", response)
            return None
        links = await asyncio.to_thread(parse_project_page, response.text, url)
        yanked_versions = self.config.yanked.get(name, frozenset())
        files = []
        for link in links:
            if link.sha256 is None:
                # GitLab stores no digest for an upload that sent none: pip cannot use the file.
                log.warning("source %s: %s has no sha256, not listed", self.name, link.filename)
                continue
            version = file_version(link.filename) if yanked_versions else None
            files.append(
                DistFile(
                    filename=link.filename,
                    sha256=link.sha256,
                    source=self.name,
                    url=self._file_url(link.sha256, link.filename),
                    requires_python=link.requires_python,
                    yanked=version in yanked_versions if version else False,
                )
            )
        # PEP 700 details: asked only now that the page has files, never beside a "not here"
        files = await self.details.prepare(name, files)
        return ProjectPage(name=name, files=tuple(files), sources=(self.name,))

    async def with_details(self, page: ProjectPage) -> ProjectPage:
        """A cached page with the exact details learnt in the background since it was fetched."""
        files = await self.details.refine(page.name, page.files)
        return page if files is None else replace(page, files=tuple(files))

    async def _listing(self, name: str, page: int, background: bool) -> Listing:
        """One page of the Packages API's packages whose name contains `name`, newest first."""
        params: dict[str, str | int] = {
            "package_type": "pypi",
            "package_name": name,
            "order_by": "created_at",
            "sort": "desc",
        }
        return await self._list(self.packages_url, params, page, background=background)

    async def _list(
        self, url: str, params: dict[str, str | int], page: int, *, background: bool = False
    ) -> Listing:
        query = {**params, "per_page": PER_PAGE, "page": page}
        response = await self._get(url, query, background=background)
        if response.status_code != 200:
            raise Refused(self.name, "the Packages API", response.status_code, _API_HINT)
        items = response.json()
        return Listing(
            items if isinstance(items, list) else [],
            _page_number(response.headers.get("x-total-pages")),
            _page_number(response.headers.get("x-next-page")),
        )

    async def _package_files(self, package: tuple[int, int | None], background: bool) -> list:
        package_id, project = package
        base = (
            f"{self.api}/projects/{project}" if project else self.packages_url[: -len("/packages")]
        )
        url = f"{base}/packages/{package_id}/package_files"
        return [f async for f in self._paged(url, {}, background=background)]

    async def project_names(self) -> frozenset[str]:
        if self.config.kind == "gitlab_project":
            response = await self._get(f"{self.base}/simple")
            if response.status_code != 200:
                self._refused("root index", response)
                return frozenset()
            return await asyncio.to_thread(parse_project_names, response.text)
        try:
            return frozenset([normalize(p["name"]) async for p in self.packages()])
        except Refused as exc:
            log.warning("%s; listing no names", exc)
            return frozenset()

    async def packages(self, **filters: str) -> AsyncIterator[dict]:
        """Every PyPI package entity of the Packages API, all pages.

        Raises Refused when GitLab will not list them (a token without read_api, say), rather
        than end as if the source were empty.
        """
        async for package in self._paged(self.packages_url, {"package_type": "pypi", **filters}):
            yield package

    async def _paged(
        self, url: str, params: dict[str, str | int], *, background: bool = False
    ) -> AsyncIterator[Any]:
        """Every item of every page. Once the first page says how many pages there are, the
        others are asked several at once; past 10,000 items GitLab stops counting, and the pages
        are followed one by one."""
        first = await self._list(url, params, 1, background=background)
        for item in first.items:
            yield item
        if first.last_page is not None:
            for window in range(2, first.last_page + 1, _PAGES_AT_ONCE):
                pages = range(window, min(window + _PAGES_AT_ONCE, first.last_page + 1))
                listings = await asyncio.gather(
                    *(self._list(url, params, p, background=background) for p in pages)
                )
                for listing in listings:
                    for item in listing.items:
                        yield item
            return
        page = first.next_page
        while page:
            listing = await self._list(url, params, page, background=background)
            for item in listing.items:
                yield item
            page = listing.next_page

    def auth_for(self, url: str) -> httpx2.Auth | None:
        """GitLab's credentials (Upstream.stream drops them on a redirect to another host)."""
        return self.auth

    def file_for(self, sha256: str, filename: str) -> DistFile:
        return DistFile(
            filename=filename, sha256=sha256, source=self.name, url=self._file_url(sha256, filename)
        )

    @asynccontextmanager
    async def open_file(self, file: DistFile) -> AsyncIterator[FileStream]:
        async with self.stream(file.url) as response:
            length = response.headers.get("content-length")
            yield FileStream(
                size=int(length) if length and length.isdigit() else None,
                chunks=self.upstream.chunks(self.name, response),
            )

    async def readable_with(self, auth: httpx2.Auth) -> bool:
        """May these (passthrough) credentials read this source? Raises SourceUnavailable.

        A project: its PyPI root index answers 200 (401 or 404 otherwise); job tokens work there.
        A group shows each caller only the projects it may read, so the credentials must see as
        many PyPI packages in it as the proxy does (fail closed: the proxy's view is shared).
        """
        if self.config.kind == "gitlab_project":
            response = await self.upstream.get(self.name, f"{self.base}/simple", auth=auth)
            return response.status_code == 200
        params: dict[str, str | int] = {"package_type": "pypi", "per_page": 1}
        theirs, ours = await asyncio.gather(
            self.upstream.get(self.name, self.packages_url, auth=auth, params=params),
            self._get(self.packages_url, params),
        )
        total = theirs.headers.get("x-total")
        return (
            theirs.status_code == ours.status_code == 200
            and total is not None
            and total == ours.headers.get("x-total")
        )

    async def upload(
        self, fields: dict[str, str], filename: str, file: BinaryIO, size: int, auth: httpx2.Auth
    ) -> UploadAnswer:
        """POST a distribution to the project's registry with `auth`. Raises SourceUnavailable
        when GitLab cannot be reached or fails (5xx)."""
        if self.config.kind != "gitlab_project":
            raise ValueError(f"source {self.name} is a group: GitLab uploads go to a project")
        sent = {k: fields[k] for k in UPLOAD_FIELDS if fields.get(k) is not None}
        body = multipart_body(sent, "content", filename, file, size)
        headers = {"content-type": body.content_type, "content-length": str(body.length)}
        # Connecting and sending are bounded by [gitlab] timeout, each wait for GitLab's answer
        # (its first byte comes once it has stored the file) by [gitlab] upload_timeout.
        timeout = httpx2.Timeout(self.timeout, read=self.upload_timeout)
        response = await self.upstream.post(
            self.name,
            self.base,
            content=body.chunks,
            headers=headers,
            auth=auth,
            timeout=timeout,
        )
        if response.status_code >= 500:
            raise SourceUnavailable(self.name, f"HTTP {response.status_code}")
        try:
            message = str(response.json().get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        return UploadAnswer(response.status_code, message.splitlines()[0][:300] if message else "")
