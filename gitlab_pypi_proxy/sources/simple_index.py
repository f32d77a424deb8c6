"""Any PEP 503/691 simple index as a source (`url` sources): the public index, devpi, Artifactory.

Asks for JSON first (PEP 691) and understands HTML; passes through what the upstream says about
each file (requires-python, yanked, core metadata, size, upload time). Credentials go only to
the index's own origin: a file or redirect on another host is fetched without them, and only
from a host its `file_hosts` names (gitlab_pypi_proxy.sources.file_hosts).
"""

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urljoin

import httpx2
from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.config import SourceConfig
from gitlab_pypi_proxy.errors import FileNotFoundUpstream, SourceUnavailable
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage, parse_time
from gitlab_pypi_proxy.names import is_sha256, normalize
from gitlab_pypi_proxy.sources.base import Context, Parts, RangeReader
from gitlab_pypi_proxy.sources.file_hosts import FileHosts
from gitlab_pypi_proxy.sources.simple_html import (
    Link,
    Status,
    parse_project_document,
    parse_project_names,
    status_of,
)
from gitlab_pypi_proxy.sources.upstream import Head, Request, Upstream, content_range

log = logging.getLogger("proxy.sources.simple_index")

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
_JSON = "application/vnd.pypi.simple.v1+json"
_MAX_METADATA = 16 * 2**20


def same_origin(a: str, b: str) -> bool:
    x, y = httpx2.URL(a), httpx2.URL(b)
    return (x.scheme, x.host, x.port) == (y.scheme, y.host, y.port)


def _metadata_hash(value: object) -> str | None:
    """PEP 714 `core-metadata`: a dict of hashes (or true, which cannot be verified: ignored)."""
    if isinstance(value, dict):
        digest = str(value.get("sha256", "")).lower()
        return digest if is_sha256(digest) else None
    return None


# the files with their PEP 700 size and upload time, the PEP 792 status, the PEP 700 versions
Parsed = tuple[list[tuple[Link, int | None, datetime | None]], Status, tuple[str, ...] | None]
_MAX_VERSION = 128  # characters: a PEP 440 version is short; longer is not one


def page_versions(value: object) -> tuple[str, ...] | None:
    """PEP 700 `versions` as a page gives them: the valid PEP 440 ones, each once; None when the
    page gives no list (its files' versions are listed then)."""
    if not isinstance(value, list):
        return None
    kept: dict[str, None] = {}
    for version in value:
        if isinstance(version, str) and len(version) <= _MAX_VERSION:
            try:
                Version(version)
            except InvalidVersion:
                continue
            kept[version] = None
    return tuple(kept)


def parse_json_page(text: str, page_url: str) -> Parsed:
    """The files of a PEP 691 project page, each with its PEP 700 size and upload time, and the
    project's PEP 792 status and its PEP 700 versions."""
    document = json.loads(text)
    meta = document.get("meta") or {}
    raw = meta.get("project-status") if isinstance(meta, dict) else None
    raw = raw if isinstance(raw, dict) else {}
    status = status_of(raw.get("status"), raw.get("reason"))
    files = []
    for entry in document.get("files", []):
        if not isinstance(entry, dict) or "url" not in entry or "filename" not in entry:
            continue
        digest = str((entry.get("hashes") or {}).get("sha256", "")).lower()
        yanked = entry.get("yanked", False)
        size = entry.get("size")
        provenance = entry.get("provenance")
        link = Link(
            filename=str(entry["filename"]),
            url=urljoin(page_url, str(entry["url"])).split("#", 1)[0],
            sha256=digest if is_sha256(digest) else None,
            requires_python=entry.get("requires-python") or None,
            yanked=yanked if isinstance(yanked, str) and yanked else bool(yanked),
            core_metadata_sha256=_metadata_hash(
                entry.get("core-metadata", entry.get("dist-info-metadata"))
            ),
            provenance=urljoin(page_url, provenance) if isinstance(provenance, str) else None,
        )
        files.append(
            (
                link,
                size if isinstance(size, int) and not isinstance(size, bool) else None,
                parse_time(entry.get("upload-time")),
            )
        )
    return files, status, page_versions(document.get("versions"))


def _parse_html(text: str, page_url: str) -> Parsed:
    links, status = parse_project_document(text, page_url)
    return [(link, None, None) for link in links], status, None


def parse_json_names(text: str) -> frozenset[str]:
    projects = json.loads(text).get("projects", [])
    return frozenset(normalize(p["name"]) for p in projects if isinstance(p, dict) and "name" in p)


def _is_json(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == _JSON


class SimpleIndexSource:
    """One `url` source. Cannot be asked for a file by digest alone: only for files it listed."""

    @classmethod
    def build(cls, config: SourceConfig, context: Context) -> Parts:
        source = cls(config, context.upstream)
        return Parts(source, sidecars=source)

    def __init__(self, config: SourceConfig, upstream: Upstream) -> None:
        self.name = config.name
        self.config = config
        self.upstream = upstream
        self.base = config.target  # ends with "/"
        self.file_hosts = FileHosts(config.name, config.target, config.file_hosts)
        self.auth = (
            httpx2.BasicAuth(config.username or "", config.password or "")
            if config.username or config.password
            else None
        )

    def auth_for(self, url: str) -> httpx2.Auth | None:
        """The credentials for `url`: this index's own, only on its own origin."""
        return self.auth if same_origin(url, self.base) else None

    async def _get(self, url: str) -> httpx2.Response:
        """GET a page; one redirect on the index's own origin is followed (e.g. to the
        normalized name), never one to another host."""
        headers = {"Accept": ACCEPT}
        response = await self.upstream.get(self.name, url, auth=self.auth_for(url), headers=headers)
        if response.is_redirect and "location" in response.headers:
            target = urljoin(url, response.headers["location"])
            if same_origin(target, self.base):
                response = await self.upstream.get(
                    self.name, target, auth=self.auth, headers=headers
                )
        return response

    def _check(self, what: str, response: httpx2.Response) -> bool:
        """True for a 200; False for "not here"; raises for a refusal that needs fixing."""
        if response.status_code == 200:
            return True
        if response.status_code in (401, 403, 407):
            raise SourceUnavailable(self.name, f"HTTP {response.status_code} (check credentials)")
        log.debug("source %s: %s answered HTTP %s", self.name, what, response.status_code)
        return False

    async def project_page(self, name: str) -> ProjectPage | None:
        url = urljoin(self.base, f"{name}/")
        response = await self._get(url)
        if not self._check(f"page {name}", response):
            return None
        page_url = str(response.url)
        try:
            parse = parse_json_page if _is_json(response) else _parse_html
            parsed, status, versions = await asyncio.to_thread(parse, response.text, page_url)
        except (ValueError, AttributeError, TypeError) as exc:
            raise SourceUnavailable(self.name, f"unreadable page ({type(exc).__name__})") from None
        files = []
        for link, size, uploaded in parsed:
            if link.sha256 is None:
                log.debug("source %s: %s has no sha256, not listed", self.name, link.filename)
                continue
            files.append(
                DistFile(
                    filename=unquote(link.filename),
                    sha256=link.sha256,
                    source=self.name,
                    url=link.url,
                    requires_python=link.requires_python,
                    yanked=link.yanked,
                    size=size,
                    upload_time=uploaded,
                    core_metadata_sha256=link.core_metadata_sha256,
                    provenance=link.provenance,
                )
            )
        return ProjectPage(
            name=name,
            files=tuple(files),
            sources=(self.name,),
            status=status.status,
            status_reason=status.reason,
            versions=versions,
        )

    async def project_names(self) -> frozenset[str]:
        response = await self._get(self.base)
        if not self._check("root index", response):
            return frozenset()
        if _is_json(response):
            return await asyncio.to_thread(parse_json_names, response.text)
        return await asyncio.to_thread(parse_project_names, response.text)

    def file_for(self, sha256: str, filename: str) -> DistFile | None:
        return None

    def _request(self, file: DistFile) -> Request:
        def request(headers: dict[str, str], method: str) -> Any:
            auth = self.auth_for(file.url)
            return self.upstream.stream(
                self.name,
                file.url,
                auth=auth,
                headers=headers,
                method=method,
                hosts=self.file_hosts,
            )

        return request

    async def file_head(self, file: DistFile) -> Head:
        return await self.upstream.head(self._request(file))

    def range_reader(self, file: DistFile, *, background: bool) -> RangeReader:
        request = self._request(file)

        async def read(spec: str) -> tuple[bytes, str | None]:
            return await self.upstream.read_range(self.name, request, spec)

        return read

    @asynccontextmanager
    async def open_file(
        self, file: DistFile, byte_range: str | None = None
    ) -> AsyncIterator[FileStream]:
        headers = {"Range": byte_range} if byte_range else {}
        async with self._request(file)(headers, "GET") as response:
            length = response.headers.get("content-length")
            yield FileStream(
                size=int(length) if length and length.isdigit() else None,
                chunks=self.upstream.chunks(self.name, response),
                content_range=content_range(response),
            )

    async def _small(self, url: str, what: str) -> bytes:
        parts: list[bytes] = []
        async with self.upstream.stream(
            self.name, url, auth=self.auth_for(url), hosts=self.file_hosts
        ) as response:
            async for chunk in self.upstream.chunks(self.name, response):
                parts.append(chunk)
                if sum(map(len, parts)) > _MAX_METADATA:
                    raise SourceUnavailable(self.name, f"{what} too large")
        return b"".join(parts)

    async def provenance(self, file: DistFile) -> bytes:
        """The PEP 740 provenance object the upstream advertised for `file`."""
        if file.provenance is None:
            raise FileNotFoundUpstream(f"{self.name} advertises no provenance for {file.filename}")
        return await self._small(file.provenance, f"provenance of {file.filename}")

    async def core_metadata(self, file: DistFile) -> bytes:
        """The PEP 658 sidecar the upstream advertised for `file`, checked against its digest."""
        if file.core_metadata_sha256 is None:
            raise FileNotFoundUpstream(f"{self.name} advertises no metadata for {file.filename}")
        body = await self._small(file.url + ".metadata", "metadata file")
        if hashlib.sha256(body).hexdigest() != file.core_metadata_sha256:
            raise SourceUnavailable(self.name, f"metadata of {file.filename} fails its sha256")
        return body
