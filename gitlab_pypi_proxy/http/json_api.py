"""The PyPI JSON API (`/pypi/<name>/json`, `/pypi/<name>/<version>/json`), which Renovate,
Dependabot's cooldown and pip-audit-like tools read instead of the simple pages.

Another rendering of the reader's `ProjectPage`, so it shows nothing the reader's simple page
would not (held and vulnerable files yanked or absent alike), and a version hidden there is a
404 here. `info.version` is the release a resolver would pick; `info`'s other fields come from
the METADATA of one wheel of that release, read through the `.metadata` route's path (its read
check included), null when there is none. File URLs are absolute and the proxy's own;
`vulnerabilities` are the OSV export's advisories. Documents are rendered in a thread, a release
at a time, and answered with the simple pages' ETag and gzip."""

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from packaging.metadata import parse_email
from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.aio import off_loop
from gitlab_pypi_proxy.errors import NotFound, ProxyError
from gitlab_pypi_proxy.http.serialize import (
    ENCODER,
    JSON_API,
    Rendered,
    batched,
    file_path,
    rendered,
)
from gitlab_pypi_proxy.index.core_metadata import CoreMetadata
from gitlab_pypi_proxy.index.index_protocol import Index, Readable
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.names import file_version, normalize
from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.policy.osv import VulnerabilityIndex

log = logging.getLogger("proxy.json_api")

_MAX_VERSION = 128  # characters of a version in a URL; no release has a longer one
_NO_FIELD: dict[str, Any] = {}
_TIME = "%Y-%m-%dT%H:%M:%S"


def memo_what(base: str, name: str, version: str | None) -> str:
    """What the page memo keys a document by (its absolute URLs depend on `base`)."""
    return f"{base}pypi/{name}/{version}/json" if version else f"{base}pypi/{name}/json"


def releases(page: ProjectPage) -> dict[str, list[DistFile]]:
    """The page's wheels and sdists by version (as packaging prints it), oldest first; files
    of no version (not a wheel or sdist name) are no release's."""
    found: dict[str, list[DistFile]] = {}
    for file in page.files:
        version = file_version(file.filename)
        if version is not None:
            found.setdefault(version, []).append(file)
    return dict(sorted(found.items(), key=lambda item: _order(item[0])))


def _order(version: str) -> tuple[bool, Version]:
    try:
        return True, Version(version)
    except InvalidVersion:
        return False, Version("0")


def _yanked(files: list[DistFile]) -> bool:
    return all(f.yanked is not False for f in files)


def newest(found: Mapping[str, list[DistFile]]) -> str | None:
    """The release a resolver would pick: not yanked before yanked, final before pre-release,
    then the highest."""

    def rank(version: str) -> tuple[bool, bool, tuple[bool, Version]]:
        order = _order(version)
        return (not _yanked(found[version]), not order[1].is_prerelease, order)

    return max(found, key=rank, default=None)


def find(found: Mapping[str, list[DistFile]], asked: str) -> str | None:
    """The release `asked` names: as written, else the same PEP 440 version (1.0 is 1.0.0)."""
    if asked in found:
        return asked
    if len(asked) > _MAX_VERSION:
        return None
    try:
        wanted = Version(asked)
    except InvalidVersion:
        return None
    return next((v for v in found if _order(v) == (True, wanted)), None)


def metadata_file(files: list[DistFile]) -> DistFile | None:
    """The wheel whose METADATA stands for the release: the first not yanked, else the first."""
    wheels = [f for f in files if f.filename.endswith(".whl")]
    return next((f for f in wheels if f.yanked is False), wheels[0] if wheels else None)


@dataclass(frozen=True)
class Readers:
    """What a document is made from besides the page."""

    index: Index
    metadata: CoreMetadata
    advisories: Advisories


async def core_metadata(readers: Readers, file: DistFile, allowed: Readable) -> bytes | None:
    """The METADATA of `file` as its `.metadata` URL would serve it to this reader, or None."""
    try:
        await readers.index.check_file(file.sha256, f"{file.filename}.metadata", allowed)
        return await readers.metadata.sidecar(file.sha256, file.filename, allowed)
    except ProxyError as exc:  # the document without it, as for a release with no wheel
        log.info("no core metadata of %s for the JSON API: %s", file.filename, exc)
        return None


async def document(
    readers: Readers, page: ProjectPage, asked: str | None, base: str, allowed: Readable
) -> Rendered:
    """The JSON API document of `page` (`asked`: the release's own document, else the
    project's), its URLs under `base` (the proxy's root URL, ending in /)."""
    found, version = await off_loop(len(page.files), _chosen, page, asked)
    wheel = metadata_file(found[version])
    body = None if wheel is None else await core_metadata(readers, wheel, allowed)
    shown = found if asked is None else None
    vulnerabilities = readers.advisories.index
    return await asyncio.to_thread(
        _render, page.name, version, found, shown, body, vulnerabilities, base
    )


def _chosen(page: ProjectPage, asked: str | None) -> tuple[dict[str, list[DistFile]], str]:
    """The page's releases and the one the document is about; NotFound when there is none."""
    found = releases(page)
    version = newest(found) if asked is None else find(found, asked)
    if version is None:
        if asked is not None:
            raise NotFound(f"no readable source offers {page.name} {asked[:80]}")
        status = f": the project is {page.status}" if page.status else ""
        raise NotFound(f"no readable source offers a release of {page.name}{status}")
    return found, version


def _render(
    name: str,
    version: str,
    found: Mapping[str, list[DistFile]],
    shown: Mapping[str, list[DistFile]] | None,
    metadata: bytes | None,
    vulnerabilities: VulnerabilityIndex,
    base: str,
) -> Rendered:
    files = found[version]
    parts = ['{"info":', ENCODER.encode(info(name, version, files, metadata, base))]
    releases = b""
    if shown is not None:
        # written a release at a time (gitlab_pypi_proxy.http.serialize: one dumps of a long
        # history would hold the GIL, and so stop the event loop, for all of it)
        releases = batched((_release(v, fs, base) for v, fs in shown.items()), ",")
        parts.append(',"releases":{')
    tail = [
        "}," if shown is not None else ",",
        '"urls":',
        ENCODER.encode([file_entry(f, base) for f in files]),
        ',"vulnerabilities":',
        ENCODER.encode(advisories(vulnerabilities, name, version)),
        "}",
    ]
    body = b"".join(["".join(parts).encode(), releases, "".join(tail).encode()])
    return rendered(body, JSON_API)


def _release(version: str, files: list[DistFile], base: str) -> str:
    entries = ",".join(ENCODER.encode(file_entry(f, base)) for f in files)
    return f"{ENCODER.encode(version)}:[{entries}]"


def advisories(index: VulnerabilityIndex, name: str, version: str) -> list[dict[str, Any]]:
    """The advisories affecting `name==version`, as the public index lists OSV's."""
    return [
        {
            "aliases": list(a.aliases),
            "details": None,  # not kept (gitlab_pypi_proxy.policy.osv)
            "summary": a.summary,
            "fixed_in": list(index.fixed_in(name, a)),
            "id": a.id,
            "link": f"https://osv.dev/vulnerability/{a.id}",
            "source": "osv",
            "withdrawn": None,  # a withdrawn advisory is not read at all
        }
        for a in index.advisories(name, version)
    ]


def parsed_metadata(body: bytes | None) -> Mapping[str, Any]:
    """METADATA's fields as packaging reads them (leniently: what it cannot read is left out)."""
    if body is None:
        return _NO_FIELD
    try:
        raw, _ = parse_email(body)
    except Exception as exc:  # METADATA is upstream's bytes: a bad one costs its fields only
        log.info("unreadable METADATA: %s", exc)
        return _NO_FIELD
    return raw


def info(
    name: str, version: str, files: list[DistFile], metadata: bytes | None, base: str
) -> dict[str, Any]:
    """The `info` object of release `version` of project `name`, from its METADATA."""
    raw = parsed_metadata(metadata)
    said = raw.get("name")
    shown = said if isinstance(said, str) and normalize(said) == name else name
    keywords = raw.get("keywords")
    platforms = raw.get("platforms")
    yanked = _yanked(files)
    reasons = [f.yanked for f in files if isinstance(f.yanked, str) and f.yanked]
    requires_python = raw.get("requires_python") or next(
        (f.requires_python for f in files if f.requires_python), None
    )
    author, author_email = raw.get("author"), raw.get("author_email")
    if author is None and author_email:
        author = parseaddr(author_email)[0] or None
    return {
        "author": author,
        "author_email": author_email,
        "bugtrack_url": None,
        "classifiers": raw.get("classifiers") or [],
        "description": raw.get("description"),
        "description_content_type": raw.get("description_content_type"),
        "docs_url": None,
        "download_url": raw.get("download_url"),
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": raw.get("dynamic"),
        "home_page": raw.get("home_page"),
        "keywords": ",".join(keywords) if keywords else None,
        "license": raw.get("license"),
        "license_expression": raw.get("license_expression"),
        "license_files": raw.get("license_files"),
        "maintainer": raw.get("maintainer"),
        "maintainer_email": raw.get("maintainer_email"),
        "name": shown,
        "package_url": f"{base}simple/{name}/",
        "platform": platforms[0] if platforms else None,
        "project_url": f"{base}simple/{name}/",
        "project_urls": raw.get("project_urls"),
        "provides_extra": raw.get("provides_extra"),
        "release_url": f"{base}pypi/{name}/{version}/json",
        "requires_dist": raw.get("requires_dist"),
        "requires_python": requires_python,
        "summary": raw.get("summary"),
        "version": version,
        "yanked": yanked,
        "yanked_reason": reasons[0] if yanked and reasons else None,
    }


def file_entry(file: DistFile, base: str) -> dict[str, Any]:
    """One file as the public index's JSON API shows it (md5 and blake2b are not known)."""
    wheel = file.filename.endswith(".whl")
    uploaded = file.upload_time
    reason = file.yanked if isinstance(file.yanked, str) and file.yanked else None
    return {
        "comment_text": "",
        "core-metadata": (
            {"sha256": file.core_metadata_sha256} if file.core_metadata_sha256 else False
        ),
        "digests": {"sha256": file.sha256},
        "downloads": -1,
        "filename": file.filename,
        "has_sig": False,
        "packagetype": "bdist_wheel" if wheel else "sdist",
        # a wheel's python tag (name-version[-build]-python-abi-platform.whl)
        "python_version": file.filename[:-4].split("-")[-3] if wheel else "source",
        "requires_python": file.requires_python,
        "size": file.size,
        "upload_time": uploaded.strftime(_TIME) if uploaded else None,
        "upload_time_iso_8601": uploaded.strftime(f"{_TIME}.%fZ") if uploaded else None,
        "url": f"{base}{file_path(file)}",
        "yanked": file.yanked is not False,
        "yanked_reason": reason,
    }
