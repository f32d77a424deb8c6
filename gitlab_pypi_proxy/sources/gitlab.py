"""What GitLab's two kinds of source share, by composition: `GitLabApi`, the calls to one project's
or group's PyPI registry and Packages API with the proxy's credentials, spent from the request
budget; and the pages and PEP 700 details built on them (`GitLabPages`). GitLabProject and
GitLabGroup (their own modules) hold one of each and differ only where GitLab does.

GitLab answers a name it lacks with a 302 to the public index: a page request never follows
redirects, and any 3xx means "not here". File links come back on GitLab's external host, so they
are rebuilt on the configured API URL, where the proxy's credentials belong. Every request sent
with the proxy's credentials is spent from the shared GitLab `budget`.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx2

from gitlab_pypi_proxy.aio import BYTES_PER_FILE, off_loop
from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.errors import RateLimited, Refused, SourceUnavailable
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage
from gitlab_pypi_proxy.sources.base import RangeReader
from gitlab_pypi_proxy.sources.budget import Budget
from gitlab_pypi_proxy.sources.gitlab_details import PER_PAGE, FileDetails, Listing, name_query
from gitlab_pypi_proxy.sources.page_fields import Dropped, load_json
from gitlab_pypi_proxy.sources.simple_html import decoded, parse_project_page
from gitlab_pypi_proxy.sources.upstream import Head, Upstream, content_range, host_port
from gitlab_pypi_proxy.storage.details import DetailsStore

log = logging.getLogger("proxy.sources.gitlab")

API_HINT = " (the token needs the read_api scope and read access to the project or group)"
_PAGES_AT_ONCE = 8  # Packages API pages asked at once when listing everything


def _page_number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


class GitLabApi:
    """One project's or group's registry: `root` is its API path (…/projects/<id> or
    …/groups/<id>), `pypi` its PyPI base, `packages_url` its Packages API listing."""

    def __init__(
        self,
        config: SourceConfig,
        gitlab: GitLabConfig,
        upstream: Upstream,
        *,
        root: str,
        pypi: str,
        packages_url: str,
        budget: Budget | None = None,
        auth: httpx2.Auth | None = None,
    ) -> None:
        self.name = config.name
        self.upstream = upstream
        self.auth = auth or (
            httpx2.BasicAuth(gitlab.username, gitlab.token) if gitlab.token else None
        )
        # what GitLab's 401 to the proxy's own requests means: the source is down until fixed
        self.refused_means = (
            "GitLab refused the proxy's [gitlab] token (wrong, expired or revoked)"
            if gitlab.token
            else "no [gitlab] token is set and GitLab asks for one"
        )
        self.api, self.root, self.pypi, self.packages_url = gitlab.api_url, root, pypi, packages_url
        self.timeout, self.upload_timeout = gitlab.timeout, gitlab.upload_timeout
        self.budget = budget or Budget(gitlab.max_requests_per_minute)

    def file_url(self, sha256: str, filename: str) -> str:
        return f"{self.pypi}/files/{sha256}/{quote(filename)}"

    def refused(self, what: str, response: httpx2.Response) -> None:
        level = logging.DEBUG if response.status_code in (302, 404) else logging.WARNING
        log.log(level, "source %s: %s answered HTTP %s", self.name, what, response.status_code)

    async def get(
        self, url: str, params: dict[str, str | int] | None = None, *, background: bool = False
    ) -> httpx2.Response:
        """GET with the proxy's credentials, spent from the budget. A client's request raises
        RateLimited when GitLab or the budget will not have it now; background work and a
        patient budget (prefetch) wait and ask again."""
        while True:
            try:
                async with self.budget.request(self.name, background=background):
                    return await self.upstream.get(
                        self.name, url, auth=self.auth, params=params, refused=self.refused_means
                    )
            except RateLimited:
                if not self.budget.waits(background):
                    raise

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        background: bool = False,
    ) -> AsyncIterator[httpx2.Response]:
        """`Upstream.stream` with the proxy's credentials, spent from the budget like `get`."""
        while True:
            answered = False
            try:
                async with (
                    self.budget.request(self.name, background=background),
                    self.upstream.stream(
                        self.name,
                        url,
                        auth=self.auth,
                        headers=headers,
                        method=method,
                        refused=self.refused_means,
                    ) as response,
                ):
                    answered = True
                    yield response
                return
            except RateLimited:
                if answered or not self.budget.waits(background):
                    raise

    async def list_page(
        self, url: str, params: dict[str, str | int], page: int, *, background: bool = False
    ) -> Listing:
        """One page of a Packages API listing. Raises Refused when GitLab will not list."""
        query = {**params, "per_page": PER_PAGE, "page": page}
        response = await self.get(url, query, background=background)
        if response.status_code != 200:
            raise Refused(self.name, "the Packages API", response.status_code, API_HINT)
        items = load_json(response.content)
        return Listing(
            items if isinstance(items, list) else [],
            _page_number(response.headers.get("x-total-pages")),
            _page_number(response.headers.get("x-next-page")),
        )

    async def paged(
        self, url: str, params: dict[str, str | int], *, background: bool = False
    ) -> AsyncIterator[Any]:
        """Every item of every page. Once the first page says how many pages there are, the
        others are asked several at once; past 10,000 items GitLab stops counting, and the pages
        are followed one by one."""
        first = await self.list_page(url, params, 1, background=background)
        for item in first.items:
            yield item
        if first.last_page is not None:
            for window in range(2, first.last_page + 1, _PAGES_AT_ONCE):
                pages = range(window, min(window + _PAGES_AT_ONCE, first.last_page + 1))
                listings = await asyncio.gather(
                    *(self.list_page(url, params, p, background=background) for p in pages)
                )
                for listing in listings:
                    for item in listing.items:
                        yield item
            return
        page = first.next_page
        while page:
            listing = await self.list_page(url, params, page, background=background)
            for item in listing.items:
                yield item
            page = listing.next_page

    async def packages(self, **filters: str) -> AsyncIterator[dict[str, Any]]:
        """Every PyPI package entity of the Packages API, all pages.

        Raises Refused when GitLab will not list them (a token without read_api, say), rather
        than end as if the source were empty.
        """
        async for package in self.paged(self.packages_url, {"package_type": "pypi", **filters}):
            yield package

    async def listing(self, name: str, page: int, background: bool) -> Listing:
        """One page of the Packages API's packages whose stored name may be normalized `name`
        (and others: the caller filters), newest first."""
        params: dict[str, str | int] = {
            "package_type": "pypi",
            "package_name": name_query(name),
            "order_by": "created_at",
            "sort": "desc",
        }
        return await self.list_page(self.packages_url, params, page, background=background)

    async def package_files(
        self, package: tuple[int, int | None], background: bool
    ) -> list[dict[str, Any]]:
        """The `package_files` of one package (by its project, when the listing says which)."""
        package_id, project = package
        base = f"{self.api}/projects/{project}" if project else self.root
        url = f"{base}/packages/{package_id}/package_files"
        return [f async for f in self.paged(url, {}, background=background)]

    # --- files --------------------------------------------------------------------------------

    def file_for(self, sha256: str, filename: str) -> DistFile:
        return DistFile(
            filename=filename, sha256=sha256, source=self.name, url=self.file_url(sha256, filename)
        )

    @asynccontextmanager
    async def open_file(
        self, file: DistFile, byte_range: str | None = None
    ) -> AsyncIterator[FileStream]:
        headers = {"Range": byte_range} if byte_range else None
        async with self.stream(file.url, headers=headers) as response:
            length = response.headers.get("content-length")
            yield FileStream(
                size=int(length) if length and length.isdigit() else None,
                chunks=self.upstream.chunks(self.name, response),
                content_range=content_range(response),
            )

    async def file_head(self, file: DistFile) -> Head:
        return await self.upstream.head(
            lambda headers, method: self.stream(file.url, headers=headers, method=method)
        )

    def range_reader(self, file: DistFile, *, background: bool) -> RangeReader:
        def request(headers: dict[str, str], method: str) -> Any:
            return self.stream(file.url, headers=headers, method=method, background=background)

        async def read(spec: str) -> tuple[bytes, str | None]:
            return await self.upstream.read_range(self.name, request, spec)

        return read


class GitLabPages:
    """A GitLab source's project pages: GitLab's simple page, its files' links rebuilt and their
    PEP 700 details added (gitlab_pypi_proxy.sources.gitlab_details)."""

    def __init__(
        self,
        api: GitLabApi,
        details: DetailsStore | None = None,
        changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.api = api
        self.details = FileDetails(
            api.name, api.listing, api.package_files, details or DetailsStore(None), changed
        )

    def _files(self, response: httpx2.Response, url: str, dropped: Dropped) -> list[DistFile]:
        """The page's files (in a thread: a long history lists 10,000)."""
        files = []
        for link in parse_project_page(decoded(response.content, response.encoding), url, dropped):
            if link.sha256 is None:
                # GitLab stores no digest for an upload that sent none: pip cannot use the file.
                log.warning("source %s: %s has no sha256, not listed", self.api.name, link.filename)
                continue
            files.append(
                DistFile(
                    filename=link.filename,
                    sha256=link.sha256,
                    source=self.api.name,
                    url=self.api.file_url(link.sha256, link.filename),
                    requires_python=link.requires_python,
                )
            )
        return files

    async def project_page(self, name: str, *, listed: bool = False) -> ProjectPage | None:
        """`listed`: the project's root index lists `name`, so its page very likely has files:
        the Packages API listing for its upload times may go out beside the page."""
        url = f"{self.api.pypi}/simple/{name}"
        early = self.details.ask_early(name) if listed else None
        try:
            response = await self.api.get(url)
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        if response.status_code == 401:
            # the proxy's own credentials refused: the source cannot say whether it has the name
            # (answering "not here" would hand the name to a public index)
            host = host_port(response.request.url)
            reason = f"HTTP 401 from {host}: {self.api.refused_means}"
            raise SourceUnavailable(self.api.name, reason, reported=True)  # as the transport did
        if response.status_code != 200:
            self.api.refused(f"page {name}", response)
            return None  # a listing asked early is dropped
        dropped = Dropped()
        try:
            files = await off_loop(
                len(response.content) // BYTES_PER_FILE, self._files, response, url, dropped
            )
        except (ValueError, AssertionError, RecursionError) as exc:  # html.parser on a bad day
            raise SourceUnavailable(
                self.api.name, f"unreadable page of {name} ({type(exc).__name__})"
            ) from None
        dropped.report(log, self.api.name, f"page {name}")
        # PEP 700 details: else asked only now that the page has files, never beside a name
        # the project did not list (a public dependency's "not here")
        files = await self.details.prepare(name, files, early)
        return ProjectPage(name=name, files=tuple(files), sources=(self.api.name,))
