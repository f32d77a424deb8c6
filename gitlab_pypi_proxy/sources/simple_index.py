"""Any PEP 503/691 simple index as a source (`url` sources): the public index, devpi, Artifactory.

Asks for JSON first (PEP 691) and understands HTML; passes through what the upstream says about
each file (requires-python, yanked, core metadata, size, upload time). Credentials go only to
the index's own origin: a file or redirect on another host is fetched without them, and only
from a host its `file_hosts` names (gitlab_pypi_proxy.sources.file_hosts).
"""

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urljoin

import httpx2
from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.aio import BYTES_PER_FILE, off_loop
from gitlab_pypi_proxy.config import SourceConfig
from gitlab_pypi_proxy.errors import FileNotFoundUpstream, SourceUnavailable
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage, parse_time
from gitlab_pypi_proxy.names import is_sha256
from gitlab_pypi_proxy.sources.base import Context, Parts, RangeReader
from gitlab_pypi_proxy.sources.file_hosts import FileHosts
from gitlab_pypi_proxy.sources.json_stream import JsonScanner, utf8_text
from gitlab_pypi_proxy.sources.page_fields import BadEntry, Dropped, Malformed
from gitlab_pypi_proxy.sources.simple_html import (
    Link,
    ProjectStatus,
    checked_link,
    decoded,
    parse_project_document,
    parse_project_names,
    project_names,
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
        return _sha256_of(value)
    return None


def _sha256_of(hashes: dict[object, object]) -> str | None:
    digest = hashes.get("sha256")
    return digest.lower() if isinstance(digest, str) and is_sha256(digest.lower()) else None


# the files with their PEP 700 size and upload time, the PEP 792 status, the PEP 700 versions
Detailed = tuple[Link, int | None, datetime | None]
Parsed = tuple[list[Detailed], ProjectStatus, tuple[str, ...] | None]
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


def _size(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


def parse_json_page(body: bytes | str, page_url: str, dropped: Dropped | None = None) -> Parsed:
    """The files of a PEP 691 project page, each with its PEP 700 size and upload time, and the
    project's PEP 792 status. The page is decoded entry by entry (json_stream); an entry that
    is malformed is left out and counted in `dropped`; a document that is not a PEP 691 page
    raises Malformed."""
    dropped = dropped if dropped is not None else Dropped()
    scan = JsonScanner(utf8_text(body) if isinstance(body, bytes) else body)
    if not scan.next_is("{"):
        document = scan.value()
        raise Malformed(f"a JSON {type(document).__name__}, not a project page object")
    files: list[tuple[Link, int | None, datetime | None]] = []
    meta: object = None
    versions: tuple[str, ...] | None = None
    for key in scan.members():
        if key == "files" and scan.next_is("["):
            files = []
            for number, entry in enumerate(scan.elements()):
                try:
                    files.append(_file_entry(entry, page_url))
                except BadEntry as exc:
                    dropped.add(f"files[{number}]: {exc}")
        elif key == "files":
            entries = scan.value()
            raise Malformed(f"its files are a JSON {type(entries).__name__}, not a list")
        elif key == "meta":
            meta = scan.value()
        elif key == "versions":
            versions = page_versions(scan.value())
        else:
            scan.skip()
    scan.end()
    raw = meta.get("project-status") if isinstance(meta, dict) else None
    raw = raw if isinstance(raw, dict) else {}
    return files, status_of(raw.get("status"), raw.get("reason")), versions


def absolute(page_url: str, url: str) -> str:
    """`url` resolved against `page_url`, as urljoin does; an http(s) URL with a host is taken
    as it is (urljoin only takes it apart and puts it back together: the public index's file
    URLs are all absolute, and joining them was half of parsing a page of thousands)."""
    if url.startswith(("https://", "http://")):
        return url
    return urljoin(page_url, url)


def _file_entry(entry: object, page_url: str) -> tuple[Link, int | None, datetime | None]:
    """One entry of `files`: its link, size and upload time; raises BadEntry."""
    if not isinstance(entry, dict):
        raise BadEntry(f"a JSON {type(entry).__name__}, not an object")
    hashes, filename = entry.get("hashes"), entry.get("filename")
    url, provenance, yanked = entry.get("url"), entry.get("provenance"), entry.get("yanked")
    link = checked_link(
        filename=unquote(filename) if isinstance(filename, str) else filename,
        url=absolute(page_url, url).split("#", 1)[0] if isinstance(url, str) else url,
        sha256=_sha256_of(hashes) if isinstance(hashes, dict) else None,
        requires_python=entry.get("requires-python"),
        yanked=False if yanked in (None, "") else yanked,
        core_metadata_sha256=_metadata_hash(
            entry.get("core-metadata", entry.get("dist-info-metadata"))
        ),
        provenance=absolute(page_url, provenance) if isinstance(provenance, str) else None,
    )
    return link, _size(entry.get("size")), parse_time(entry.get("upload-time"))


def _parse_html(body: bytes, encoding: str | None, page_url: str, dropped: Dropped) -> Parsed:
    links, status = parse_project_document(decoded(body, encoding), page_url, dropped)
    return [(link, None, None) for link in links], status, None


def parse_json_names(body: bytes | str) -> frozenset[str]:
    """The normalized names of a PEP 691 root index, decoded name by name."""
    scan = JsonScanner(utf8_text(body) if isinstance(body, bytes) else body)
    if not scan.next_is("{"):
        raise Malformed("not a PEP 691 project list")
    said: list[object] = []
    for key in scan.members():
        if key == "projects" and scan.next_is("["):
            said = [p.get("name") for p in scan.elements() if isinstance(p, dict)]
        elif key == "projects":
            raise Malformed("not a PEP 691 project list")
        else:
            scan.skip()
    scan.end()
    return project_names(said)


# what a parser raises for an answer it cannot read: Malformed, and what it never should
_UNREADABLE = (ValueError, AttributeError, TypeError, RecursionError)


def _unreadable(source: str, what: str, exc: Exception) -> SourceUnavailable:
    """The source's failure for an answer it gave that cannot be read, said in the log too."""
    why = str(exc) if isinstance(exc, Malformed) else type(exc).__name__
    failure = SourceUnavailable(source, f"unreadable {what}: {why}")
    log.warning("%s", failure)
    return failure


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
        dropped = Dropped()
        try:
            page = await off_loop(
                len(response.content) // BYTES_PER_FILE, self._page, name, response, dropped
            )
        except _UNREADABLE as exc:
            raise _unreadable(self.name, f"page of {name}", exc) from None
        dropped.report(log, self.name, f"page {name}")
        return page

    def _page(self, name: str, response: httpx2.Response, dropped: Dropped) -> ProjectPage:
        """The project page an answer holds (blocking: a thread; decoding and parsing a page of
        many thousand files takes seconds)."""
        page_url = str(response.url)
        if _is_json(response):
            parsed, status, versions = parse_json_page(response.content, page_url, dropped)
        else:
            parsed, status, versions = _parse_html(
                response.content, response.encoding, page_url, dropped
            )
        files = []
        for link, size, uploaded in parsed:
            if link.sha256 is None:
                log.debug("source %s: %s has no sha256, not listed", self.name, link.filename)
                continue
            files.append(
                DistFile(
                    filename=link.filename,
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

        def parse() -> frozenset[str]:
            if _is_json(response):
                return parse_json_names(response.content)
            return parse_project_names(decoded(response.content, response.encoding))

        try:
            return await asyncio.to_thread(parse)
        except _UNREADABLE as exc:
            raise _unreadable(self.name, "root index", exc) from None

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
