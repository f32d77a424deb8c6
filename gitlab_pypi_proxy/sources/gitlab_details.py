"""PEP 700 for GitLab files: size and upload time, which GitLab's simple page lacks.

A page that lists files asks the Packages API listing for the versions it has not seen, and
waits for no more than that. GitLab matches `package_name` as a substring of the name as
uploaded, so the listing is asked with the name's longest run of letters and digits and the
entries of exactly the name, normalized, are kept. Until a file's exact details are known it
carries its version's `created_at` and no size; the exact ones come from `package_files`, one
call per version, in the background at background priority, newest first, kept for good
(gitlab_pypi_proxy.storage.details), every worker's rendered pages refreshed as they arrive. A
name the root index lists and never seen before has its listing's first page asked beside its
simple page (`ask_early`): one round trip where two were. The details: docs/architecture.md,
"PEP 700 from GitLab"."""

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.aio import TaskSet, TTLMemo, off_loop
from gitlab_pypi_proxy.errors import Refused, SourceUnavailable
from gitlab_pypi_proxy.model import DistFile, parse_time
from gitlab_pypi_proxy.names import file_version, normalize
from gitlab_pypi_proxy.storage.details import DetailsStore, Exact, FileKey, Known
from gitlab_pypi_proxy.storage.details import Version as Listed

log = logging.getLogger("proxy.sources.gitlab")

PER_PAGE = 100  # the Packages API's largest page
_SLACK = 2  # listing pages read on a client's time beyond what the unseen versions need
_PAGES_AT_ONCE = 16  # listing pages asked at once
_FILLS_AT_ONCE = 4  # package_files calls at once, in the background
_FLUSH_EVERY = 100  # versions between two writes of what was learnt
_SEEK_AGAIN = 3600.0  # seconds before a version or a file is asked about again in vain
_ASKED = 8192  # files asked about lately (~350 bytes each)
_REFUSED_PAUSE = 600.0  # seconds without listing after GitLab refused to list


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of the Packages API."""

    items: list[dict[str, Any]]
    last_page: int | None  # X-Total-Pages: None past 10,000 items, where GitLab stops counting
    next_page: int | None  # None on the last page


ListPage = Callable[[str, int, bool], Awaitable[Listing]]  # (name, page, background)
PackageFiles = Callable[[tuple[int, int | None], bool], Awaitable[list[dict[str, Any]]]]

# The listing's first page asked beside the simple page: None when it was not asked after all
# (the name's versions are known), the exception when asking failed (raised where it is read).
Early = asyncio.Future[Listing | Exception | None]


def name_query(name: str) -> str:
    """What to ask the Packages API's `package_name` for normalized `name`: its longest part
    between separators, which every stored spelling of the name contains whatever its
    separators and case (of parts as long, the last: `acme-core` asks `core`, since a company's
    prefix is in each of its names)."""
    parts = name.split("-")
    return max(reversed(parts), key=len)


@functools.lru_cache(maxsize=4096)  # ~1 MiB: the files of a page that lack exact details
def version_of(filename: str) -> str | None:
    """The canonical version of a file name (as packaging prints it), or None."""
    return _canonical(file_version(filename))


def _canonical(version: str | None) -> str | None:
    try:
        return str(Version(version)) if version else None
    except InvalidVersion:
        return version


def _newest_first(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def exact_details(entries: Iterable[dict[str, Any]]) -> Exact:
    """(file name, sha256) → (size, upload time) of `package_files` entries."""
    found: Exact = {}
    for entry in entries:
        uploaded = parse_time(entry.get("created_at"))
        size = entry.get("size")
        if entry.get("file_sha256") and uploaded and isinstance(size, int):
            found[(str(entry.get("file_name")), str(entry["file_sha256"]))] = (size, uploaded)
    return found


def with_known(files: Sequence[DistFile], known: Known) -> list[DistFile]:
    """The files with their exact details where known, else their version's creation time."""
    out = []
    for file in files:
        if file.size is not None:  # exact already: exact details never change
            out.append(file)
            continue
        exact = known.files.get((file.filename, file.sha256))
        if exact is not None:
            size, uploaded = exact
        else:
            listed = known.versions.get(version_of(file.filename) or "")
            size, uploaded = None, listed.created_at if listed else None
        changed = (size, uploaded) != (file.size, file.upload_time)
        out.append(replace(file, size=size, upload_time=uploaded) if changed else file)
    return out


class FileDetails:
    def __init__(
        self,
        source: str,
        list_page: ListPage,
        package_files: PackageFiles,
        store: DetailsStore,
        changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.source, self.store = source, store
        self._list_page, self._package_files = list_page, package_files
        self._changed = changed  # called with a project's name when its exact details arrived
        self._tasks = TaskSet(log, f"source {source}: details")  # one per name at a time
        # files whose version's files were asked for lately
        self._asked: TTLMemo[FileKey, None] = TTLMemo(_ASKED, _SEEK_AGAIN)
        self._refused_until = 0.0

    async def close(self) -> None:
        await self._tasks.close()

    async def settled(self) -> None:
        """Wait until the background work started so far has finished (prefetch, tests)."""
        await self._tasks.settled()

    def ask_early(self, name: str) -> Early | None:
        """Ask the listing's first page for `name` now, beside its simple page, unless its
        versions are known; the answer is for `prepare`, which may drop it."""
        if time.monotonic() < self._refused_until:
            return None

        async def first() -> Listing | Exception | None:
            if (await self.store.read(self.source, name)).versions:
                return None  # seen before: the page alone is one round trip
            try:
                return await self._list_page(name, 1, False)
            except Exception as exc:  # raised by `_search` if read, else dropped
                return exc

        return self._tasks.spawn(first())

    async def prepare(
        self, name: str, files: list[DistFile], early: Early | None = None
    ) -> list[DistFile]:
        """`files` of a fresh page with what is known of them. Versions never seen are sought in
        the listing first (bounded; its first page may have been asked `early`); exact details
        are asked for later, in the background."""
        known = await self.store.read(self.source, name)
        lacking, wanted = await off_loop(len(files), _to_seek, files, known, time.time())
        if not lacking:
            return await off_loop(len(files), with_known, files, known)
        resume = None
        if wanted and time.monotonic() >= self._refused_until:
            found, resume = await self._search(name, wanted, start=1, background=False, early=early)
            known = Known(known.files, {**known.versions, **found})
        self._later(name, lacking, wanted, resume)
        return await off_loop(len(files), with_known, files, known)

    async def refine(self, name: str, files: Sequence[DistFile]) -> list[DistFile] | None:
        """`files` (of a cached page) with the details learnt since; None when none are new."""
        if all(f.size is not None for f in files):
            return None
        known = await self.store.read(self.source, name)
        refined = await off_loop(len(files), with_known, files, known)
        return refined if any(a is not b for a, b in zip(files, refined, strict=True)) else None

    # --- the listing --------------------------------------------------------------------------

    async def _search(
        self,
        name: str,
        wanted: set[str],
        *,
        start: int,
        background: bool,
        early: Early | None = None,
    ) -> tuple[dict[str, Listed], int | None]:
        """Seek `wanted` versions in the listing from page `start`, newest first; keep what is
        found. On a client's time the pages read are bounded by what the versions need; in the
        background, the listing is read to its end or until all are found.

        Returns every version found (not only the wanted ones) and the first page not read
        (None when the listing was read to its end, or could not be).
        """
        found: dict[str, Listed] = {}
        after: int | None = None
        try:
            first = await self._first(name, start, background, early)
            _collect(name, first.items, found)
            after = first.next_page
            if background:
                while after and wanted - found.keys():
                    listing = await self._list_page(name, after, True)
                    _collect(name, listing.items, found)
                    after = listing.next_page
            elif after and wanted - found.keys():
                after = await self._read_at_once(name, wanted, found, start, first)
        except Exception as exc:  # a refusal, an outage, a 429, an answer that is no listing
            if isinstance(exc, Refused):  # a token without read_api: do not ask on every page
                self._refused_until = time.monotonic() + _REFUSED_PAUSE
            reason = str(exc) or type(exc).__name__
            log.warning(
                "source %s: upload times of %s not listed now: %s", self.source, name, reason
            )
            await self.store.add_versions(self.source, name, found)
            return found, None
        now = time.time()
        if after is None:  # read to its end: what it lacks is not sought again for a while
            found |= {v: Listed(None, (), now) for v in wanted - found.keys()}
        await self.store.add_versions(self.source, name, found)
        return found, after

    async def _first(self, name: str, start: int, background: bool, early: Early | None) -> Listing:
        answer = await early if early is not None and start == 1 else None
        if isinstance(answer, Exception):
            raise answer
        return answer if answer is not None else await self._list_page(name, start, background)

    async def _read_at_once(
        self, name: str, wanted: set[str], found: dict[str, Listed], start: int, first: Listing
    ) -> int | None:
        """Read the pages after `first` that the unseen versions need, all at once."""
        needed = math.ceil(len(wanted - found.keys()) / PER_PAGE) + _SLACK
        upto = start + needed if first.last_page is None else min(first.last_page, start + needed)
        limit = asyncio.Semaphore(_PAGES_AT_ONCE)

        async def one(page: int) -> Listing:
            async with limit:
                return await self._list_page(name, page, False)

        listings = await asyncio.gather(*(one(p) for p in range(start + 1, upto + 1)))
        for listing in listings:
            _collect(name, listing.items, found)
        return listings[-1].next_page if listings else None

    # --- the background -----------------------------------------------------------------------

    def _later(
        self, name: str, lacking: set[FileKey], wanted: set[str], resume: int | None
    ) -> None:
        if name not in self._tasks:
            self._tasks.spawn(self._background(name, lacking, wanted, resume), key=name)

    async def _background(
        self, name: str, lacking: set[FileKey], wanted: set[str], resume: int | None
    ) -> None:
        try:
            if resume is not None:
                await self._search(name, wanted, start=resume, background=True)
            await self._fill(name, lacking)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # background work must not die with a traceback
            log.warning("source %s: details of %s not filled in: %s", self.source, name, exc)

    async def _fill(self, name: str, lacking: set[FileKey]) -> None:
        """Ask `package_files` for the versions of the files that lack exact details, newest
        first; a file asked for in vain is not asked for again for a while."""
        known = await self.store.read(self.source, name)
        by_version: dict[str, list[FileKey]] = {}
        for key in lacking - known.files.keys():
            version = version_of(key[0])
            listed = known.versions.get(version or "")
            if listed and listed.packages and key not in self._asked:
                by_version.setdefault(str(version), []).append(key)
        limit = asyncio.Semaphore(_FILLS_AT_ONCE)
        gone: set[str] = set()

        async def files_of(version: str) -> Exact:
            exact: Exact = {}
            async with limit:
                for package in known.versions[version].packages:
                    try:
                        exact |= exact_details(await self._package_files(package, True))
                    except Refused as exc:
                        if exc.upstream_status == 404:  # deleted, or re-created under another id
                            gone.add(version)
                    except SourceUnavailable:
                        return exact  # a 429 or an outage: asked again with the next fetch
            if version not in gone:  # else sought anew in the listing with the next fetch
                for key in by_version[version]:
                    self._asked.set(key, None)
            return exact

        versions = sorted(by_version, key=_newest_first, reverse=True)
        for start in range(0, len(versions), _FLUSH_EVERY):
            learnt: Exact = {}
            batch = versions[start : start + _FLUSH_EVERY]
            for exact in await asyncio.gather(*(files_of(v) for v in batch)):
                learnt |= exact
            await self.store.add_files(self.source, name, learnt)
            if learnt and self._changed is not None:
                await self._changed(name)
        await self.store.drop_versions(self.source, name, gone)


def _to_seek(files: Sequence[DistFile], known: Known, now: float) -> tuple[set[FileKey], set[str]]:
    """The files that lack exact details, and the versions to seek in the listing for them."""
    lacking = {(f.filename, f.sha256) for f in files} - known.files.keys()
    wanted = {
        v
        for filename, _ in lacking
        if (v := version_of(filename)) is not None and _unseen(known.versions.get(v), now)
    }
    return lacking, wanted


def _unseen(listed: Listed | None, now: float) -> bool:
    """Should the listing be asked about this version now?"""
    if listed is None:
        return True
    return not listed.packages and now - listed.sought_at >= _SEEK_AGAIN


def _collect(name: str, items: list[dict[str, Any]], into: dict[str, Listed]) -> None:
    """Fold the listing's package entities of exactly `name` into versions."""
    for item in items:
        if normalize(str(item.get("name", ""))) != name or "id" not in item:
            continue
        version = _canonical(str(item.get("version", "")))
        if version is None:
            continue
        created = parse_time(item.get("created_at"))
        package = (int(item["id"]), item.get("project_id"))
        before = into.get(version)
        if before is None:
            into[version] = Listed(created, (package,))
        elif package not in before.packages:
            earliest = min((t for t in (before.created_at, created) if t), default=None)
            into[version] = Listed(earliest, (*before.packages, package))
