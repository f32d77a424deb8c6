"""PEP 700 for GitLab files: size and upload time, which GitLab's simple page lacks, from the
Packages API.

`package_name` there is a fuzzy substring match, so the packages are filtered to the exact name.
A package's file list is asked for once and kept (per worker); it is asked again only when the
page lists a file of that version that the kept list lacks (a wheel added to an old version).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from packaging.version import InvalidVersion, Version

from proxy.model import parse_time
from proxy.names import file_version, normalize
from proxy.sources.simple_html import Link

log = logging.getLogger("proxy.sources.gitlab")

Details = dict[tuple[str, str], tuple[int, datetime]]  # (file name, sha256) → (size, uploaded)

_CONCURRENCY = 8  # package_files calls at once for one page (one per version)
_MAX_KEPT = 50_000


def _canonical(version: str | None) -> str | None:
    try:
        return str(Version(version)) if version else None
    except InvalidVersion:
        return version


def _details(entries: Sequence[dict[str, Any]]) -> Details:
    found: Details = {}
    for entry in entries:
        uploaded = parse_time(entry.get("created_at"))
        size = entry.get("size")
        if entry.get("file_sha256") and uploaded and isinstance(size, int):
            found[(str(entry.get("file_name")), str(entry["file_sha256"]))] = (size, uploaded)
    return found


class FileDetails:
    def __init__(
        self,
        source: str,
        packages: Callable[[str], Awaitable[list[dict[str, Any]]]],
        package_files: Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]],
    ) -> None:
        self.source = source
        self._packages, self._package_files = packages, package_files
        self._kept: dict[int, Details] = {}

    async def packages_named(self, name: str) -> list[dict[str, Any]]:
        """The package entities (one per version) of exactly `name`."""
        return [p for p in await self._packages(name) if normalize(str(p.get("name", ""))) == name]

    async def lookup(self, packages: Awaitable[list[dict[str, Any]]], links: list[Link]) -> Details:
        """Size and upload time of the listed files; best effort ({} when the API fails)."""
        try:
            return await self._lookup(await packages, links)
        except Exception as exc:
            log.warning("source %s: no sizes or upload times: %s", self.source, exc)
            return {}

    async def _lookup(self, packages: list[dict[str, Any]], links: list[Link]) -> Details:
        known: Details = {}
        for package in packages:
            known |= self._kept.get(package["id"], {})
        missing = {(link.filename, link.sha256) for link in links if link.sha256} - known.keys()
        if not missing:
            return known
        versions = {_canonical(file_version(filename)) for filename, _ in missing}
        stale = [
            p
            for p in packages
            if p["id"] not in self._kept or _canonical(str(p.get("version"))) in versions
        ]
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def files_of(package: dict[str, Any]) -> Details:
            async with limit:
                return _details(await self._package_files(package))

        fetched = await asyncio.gather(*(files_of(p) for p in stale))
        if len(self._kept) > _MAX_KEPT:
            self._kept.clear()
        for package, details in zip(stale, fetched, strict=True):
            self._kept[package["id"]] = details
            known |= details
        return known
