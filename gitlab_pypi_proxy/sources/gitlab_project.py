"""A `gitlab_project` source: one GitLab project's PyPI registry. The one kind that takes uploads.

What it shares with a group (the API calls, pages, PEP 700 details) is
gitlab_pypi_proxy.sources.gitlab. Its root index is what the shared poll for names published to
GitLab reads (gitlab_pypi_proxy.index.name_poll), and each serving worker keeps the names it listed
(gitlab_pypi_proxy.sources.gitlab_root_index): a name it lists is asked in one round trip. A group
has no root index."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx2

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.errors import Refused, SourceUnavailable
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage
from gitlab_pypi_proxy.names import normalize
from gitlab_pypi_proxy.sources.base import Context, Parts, RangeReader, Seen, UploadAnswer
from gitlab_pypi_proxy.sources.budget import Budget
from gitlab_pypi_proxy.sources.gitlab import GitLabApi, GitLabPages
from gitlab_pypi_proxy.sources.gitlab_root_index import RootIndex
from gitlab_pypi_proxy.sources.multipart import multipart_body
from gitlab_pypi_proxy.sources.simple_html import decoded, parse_project_names
from gitlab_pypi_proxy.sources.upstream import Head, Upstream
from gitlab_pypi_proxy.storage.details import DetailsStore

READ_HINT = " (the token needs read access to the project; GitLab 15.1 or later)"
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


class GitLabProject:
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
        root = f"{gitlab.api_url}/projects/{quote(config.target, safe='')}"
        self.api = GitLabApi(
            config,
            gitlab,
            upstream,
            root=root,
            pypi=f"{root}/packages/pypi",
            packages_url=f"{root}/packages",
            budget=budget,
            auth=auth,
        )
        self.pages = GitLabPages(self.api, details, changed)
        self.details = self.pages.details
        self.root_index = RootIndex()

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
            uploads=source,
            details=source.details,
            watched=source,
        )

    @property
    def name(self) -> str:
        return self.api.name

    async def project_page(self, name: str) -> ProjectPage | None:
        return await self.pages.project_page(name, listed=self.root_index.lists(name))

    async def project_names(self) -> frozenset[str]:
        """The names of the project's PyPI root index (one link per version); none when GitLab
        does not answer with it (before 15.1: 404)."""
        response = await self.api.get(f"{self.api.pypi}/simple")
        if response.status_code != 200:
            self.api.refused("root index", response)
            return frozenset()
        pieces = decoded(response.content, response.encoding)
        return await asyncio.to_thread(parse_project_names, pieces)

    async def poll(self, seen: Seen | None) -> tuple[Seen, frozenset[str]]:
        """The root index now (one request): every name, and those `seen` lacked. Raises
        Refused when GitLab does not answer with it (a token that may not read the project,
        GitLab before 15.1), SourceUnavailable."""
        response = await self.api.get(f"{self.api.pypi}/simple")
        if response.status_code != 200:
            raise Refused(self.name, "the PyPI root index", response.status_code, READ_HINT)
        pieces = decoded(response.content, response.encoding)
        names = await asyncio.to_thread(parse_project_names, pieces)
        return Seen(names), (names if seen is None else names - seen.names)

    def saw(self, seen: Seen) -> None:
        self.root_index.update(seen.names)

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
        """May these (passthrough) credentials read the project? Its PyPI root index answers
        200 (401 or 404 otherwise); job tokens work there. Raises SourceUnavailable."""
        response = await self.api.upstream.get(self.name, f"{self.api.pypi}/simple", auth=auth)
        return response.status_code == 200

    async def upload(
        self, fields: dict[str, str], filename: str, file: BinaryIO, size: int, auth: httpx2.Auth
    ) -> UploadAnswer:
        """POST a distribution to the project's registry with `auth`. Raises SourceUnavailable
        when GitLab cannot be reached or fails (5xx)."""
        sent = {k: fields[k] for k in UPLOAD_FIELDS if fields.get(k) is not None}
        body = multipart_body(sent, "content", filename, file, size)
        headers = {"content-type": body.content_type, "content-length": str(body.length)}
        # Connecting and sending are bounded by [gitlab] timeout, each wait for GitLab's answer
        # (its first byte comes once it has stored the file) by [gitlab] upload_timeout.
        timeout = httpx2.Timeout(self.api.timeout, read=self.api.upload_timeout)
        response = await self.api.upstream.post(
            self.name,
            self.api.pypi,
            content=body.chunks,
            headers=headers,
            auth=auth,
            timeout=timeout,
        )
        if response.status_code >= 500:
            raise SourceUnavailable(self.name, f"HTTP {response.status_code}")
        if response.status_code < 300 and fields.get("name"):
            self.root_index.add(normalize(fields["name"]))
        try:
            message = str(response.json().get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        return UploadAnswer(response.status_code, message.splitlines()[0][:300] if message else "")
