"""What a source is: the protocol every upstream index speaks, and the capabilities only some
kinds of source have, each a small protocol of its own.

A kind of source is one module (gitlab_pypi_proxy.sources.gitlab_project, gitlab_group,
simple_index) with a `build` that says what the source brings to the composition (`Parts`): the
source itself and the capabilities it has, typed. The composition root (gitlab_pypi_proxy.services)
hands each consumer what it needs from those parts; nothing asks a source what it can do. Each
method says what it raises, all from gitlab_pypi_proxy.errors: SourceUnavailable (connection
errors, timeouts, 5xx; RateLimited, its subclass, when no request may go now), Refused (an
answer the proxy may not use: 401, 403, ...), FileNotFoundUpstream; nothing else."""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import httpx2

from gitlab_pypi_proxy.config import GitLabConfig
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage
from gitlab_pypi_proxy.sources.budget import Budget
from gitlab_pypi_proxy.sources.upstream import Head, Upstream
from gitlab_pypi_proxy.storage.details import DetailsStore

RangeReader = Callable[[str], Awaitable[tuple[bytes, str | None]]]
"""Fetch one `Range` header value: (body, Content-Range or None when the range was ignored)."""


class Source(Protocol):
    """One upstream index: its pages, its names, and the files its pages list."""

    @property
    def name(self) -> str:
        """The configured source name: what errors, metrics, health and DistFile.source say."""
        ...

    async def project_page(self, name: str) -> ProjectPage | None:
        """The page of normalized `name`, or None when this source does not have it. Raises
        SourceUnavailable (RateLimited), or Refused when it will not show the page."""
        ...

    async def project_names(self) -> frozenset[str]:
        """Every normalized project name this source holds. Raises SourceUnavailable
        (RateLimited), or Refused when it will not list them."""
        ...

    def file_for(self, sha256: str, filename: str) -> DistFile | None:
        """A file this source can be asked for by digest alone, without its page (or None when
        it serves only the files its pages list). Raises nothing: no request is made."""
        ...

    def open_file(
        self, file: DistFile, byte_range: str | None = None
    ) -> AbstractAsyncContextManager[FileStream]:
        """Stream a file this source listed; `byte_range` (a Range header value) asks for part
        of it (the stream's `content_range` says whether the upstream sent that part alone).
        Raises FileNotFoundUpstream or SourceUnavailable."""
        ...

    async def file_head(self, file: DistFile) -> Head:
        """The size of a file this source listed (None if the upstream does not say) and
        whether its upstream serves ranges, without downloading it. Raises
        FileNotFoundUpstream or SourceUnavailable."""
        ...

    def range_reader(self, file: DistFile, *, background: bool) -> RangeReader:
        """Ranged reads of a file this source listed (the end of a wheel, for its METADATA);
        `background`: no client waits for them. Each read raises SourceUnavailable (an answer
        too large included) or FileNotFoundUpstream."""
        ...


# --- capabilities only some kinds have ------------------------------------------------------


class PackageListing(Protocol):
    """Every package a GitLab source holds, from the Packages API (prefetch --source)."""

    def packages(self, **filters: str) -> AsyncIterator[dict[str, Any]]:
        """Every PyPI package entity, all pages. Raises Refused when GitLab will not list them."""
        ...


class Sidecars(Protocol):
    """A public index's own sidecars: PEP 658 core metadata, PEP 740 provenance."""

    async def core_metadata(self, file: DistFile) -> bytes:
        """The sidecar the upstream advertised for `file`, checked against its digest. Raises
        FileNotFoundUpstream when none is advertised, SourceUnavailable when it cannot be had
        or fails its digest."""
        ...

    async def provenance(self, file: DistFile) -> bytes:
        """The provenance object the upstream advertised for `file` (JSON, unchecked). Raises
        FileNotFoundUpstream when none is advertised, SourceUnavailable when it cannot be had."""
        ...


@dataclass(frozen=True)
class UploadAnswer:
    status: int
    message: str  # GitLab's own "message", e.g. "400 Bad request - ..."


class UploadTarget(Protocol):
    """A GitLab project's registry, which takes uploads."""

    async def upload(
        self, fields: dict[str, str], filename: str, file: BinaryIO, size: int, auth: httpx2.Auth
    ) -> UploadAnswer:
        """POST a distribution with the caller's `auth`. Raises SourceUnavailable when the
        upstream cannot be reached or fails (5xx)."""
        ...


class Details(Protocol):
    """PEP 700 details (size, upload time) a GitLab source learns after its page was cached."""

    async def refine(self, name: str, files: Sequence[DistFile]) -> list[DistFile] | None:
        """`files` (of a cached page) with the details learnt since; None when none are new.
        Raises nothing: what GitLab says is learnt in the background."""
        ...

    async def settled(self) -> None:
        """Until the background work started so far has finished (prefetch, tests)."""
        ...

    async def close(self) -> None:
        """Stop the background work."""
        ...


@dataclass(frozen=True)
class Seen:
    """What one poll of a GitLab source saw: a project's names (its root index), or the id of
    the newest package a group's Packages API listed."""

    names: frozenset[str] = frozenset()
    newest: int = 0


class Watched(Protocol):
    """A GitLab source polled for the names published to it straight, not through the proxy
    (gitlab_pypi_proxy.index.name_poll)."""

    async def poll(self, seen: Seen | None) -> tuple[Seen, frozenset[str]]:
        """What the source holds now, from one request (a few more only when more than a page
        of packages arrived since), and the normalized names in it that `seen`, the last poll's,
        lacked: every name it saw when there was none. Raises SourceUnavailable, Refused."""
        ...

    def saw(self, seen: Seen) -> None:
        """What the latest poll saw, in each worker (a project's root index is a hint)."""
        ...


Probe = Callable[[httpx2.Auth], Awaitable[bool]]
"""May these (passthrough) credentials read the source? Raises SourceUnavailable."""


@dataclass(frozen=True)
class Parts:
    """What one configured source brings to the composition.

    `owns_names`: a private (GitLab) source: a name it has is never looked up on a public index,
    and its files can be asked for by digest alone. `serves_ranges`: its upstream serves byte
    ranges of every file (GitLab's Workhorse and object storage do), so a HEAD can say so
    without asking it (any other source is asked once).
    """

    source: Source
    owns_names: bool = False
    serves_ranges: bool = False
    probe: Probe | None = None
    packages: PackageListing | None = None
    sidecars: Sidecars | None = None
    uploads: UploadTarget | None = None
    details: Details | None = None
    watched: Watched | None = None


@dataclass(frozen=True)
class Context:
    """What every kind of source is built with (each takes what it needs)."""

    upstream: Upstream
    gitlab: GitLabConfig
    budget: Budget  # GitLab's request budget, shared by every GitLab source
    details: DetailsStore  # PEP 700 details of GitLab files, kept for good
    changed: Callable[[str], Awaitable[None]]  # a project's details arrived: its pages are stale
