"""Fill the cache with everything a build needs, and say whether the build can now run offline.

Works in-process on the server's own cache directory (diskcache is safe across processes) with
the server's own index, so every file is verified exactly as a client request would verify it,
and every project page it reads lands in the page cache for an `offline = true` proxy to answer.
Resumable: a file already kept is never fetched again.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.config import Config
from gitlab_pypi_proxy.errors import (
    FileNotFoundUpstream,
    HashMismatch,
    NotFound,
    Offline,
    ProxyError,
    Refused,
    SourceUnavailable,
    Unavailable,
)
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.names import file_version, normalize
from gitlab_pypi_proxy.offline.lock_formats import parse_lock
from gitlab_pypi_proxy.offline.lockfiles import (
    LockFileError,
    Skipped,
    Wanted,
    parse_requirements,
)
from gitlab_pypi_proxy.offline.progress import Progress
from gitlab_pypi_proxy.services import Services

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    label: str
    status: Literal["cached", "fetched", "failed"]
    reason: str = ""
    size: int = 0
    sha256: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def complete(self) -> bool:
        return not self.failed

    def summary(self) -> list[str]:
        fetched = sum(o.size for o in self.outcomes if o.status == "fetched")
        lines = [
            f"already cached: {self.count('cached')}",
            f"fetched: {self.count('fetched')} ({fetched} bytes)",
            f"failed: {len(self.failed)}",
        ]
        lines += [f"  {o.label}: {o.reason}" for o in self.failed]
        if self.skipped:  # no index serves them: the build gets them from where the lock says
            lines.append(f"skipped, not from an index: {len(self.skipped)}")
            lines += [f"  {s.name} ({s.origin}): {s.kind}" for s in self.skipped]
        missing = len(self.failed)
        lines.append(
            "offline-complete: yes" if not missing else f"offline-complete: no ({missing} missing)"
        )
        return lines


def package_wanted(spec: str) -> Wanted:
    """`--package NAME[==VERSION]` (any PEP 508 specifier) → every file it allows."""
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        raise LockFileError(f"--package {spec}: {str(exc).splitlines()[0]}") from None
    return Wanted(normalize(requirement.name), "--package", specifier=requirement.specifier)


async def source_wanted(services: Services, name: str, latest: int | None) -> list[Wanted]:
    """Every package of GitLab source `name` (Packages API, all pages), the `latest` N versions
    of each name when given. Raises Refused when GitLab will not list them."""
    if services.config.source(name) is None:
        raise LockFileError(f"--source {name}: no source of that name in the configuration")
    listing = services.package_listing(name)
    if listing is None:
        raise LockFileError(f"--source {name}: only GitLab sources can list all their packages")
    versions: dict[str, set[str]] = {}
    async for package in listing.packages():
        versions.setdefault(normalize(package["name"]), set()).add(str(package["version"]))
    wanted = []
    for project, found in sorted(versions.items()):
        chosen = sorted(found, key=_version_key, reverse=True)[:latest] if latest else found
        wanted += [
            Wanted(project, f"--source {name}", specifier=SpecifierSet(f"=={v}"), source=name)
            for v in sorted(chosen)
        ]
    return wanted


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


async def _bounded(jobs: int, items: Iterable[T], run: Callable[[T], Awaitable[None]]) -> None:
    limit = asyncio.Semaphore(jobs)

    async def one(item: T) -> None:
        async with limit:
            await run(item)

    await asyncio.gather(*(one(item) for item in items))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundUpstream):
        return "no source has this file"
    if isinstance(exc, HashMismatch):
        return f"sha256 mismatch: {exc}"
    if isinstance(exc, ProxyError):  # not found, unavailable, offline: its one-line reason
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Prefetch:
    def __init__(self, services: Services, progress: Progress, jobs: int = 4) -> None:
        self.services, self.progress, self.jobs = services, progress, max(1, jobs)
        self.report = Report()

    async def run(self, wanted: Sequence[Wanted]) -> Report:
        pages: dict[str, ProjectPage | BaseException] = {}

        async def load(name: str) -> None:
            try:
                pages[name] = await self.services.composed.plain.project_page(name)
            except (NotFound, Unavailable, Offline) as exc:
                pages[name] = exc

        await _bounded(self.jobs, dict.fromkeys(w.name for w in wanted), load)
        targets: dict[str, DistFile] = {}
        for item in wanted:
            for file in await self._resolve(item, pages[item.name]):
                targets.setdefault(file.sha256, file)
        self.progress.start(len(targets) + len(self.report.outcomes))
        for outcome in self.report.outcomes:
            self.progress.done(outcome)
        await _bounded(self.jobs, targets.values(), self._fetch)
        await self._cache_project_list()
        await asyncio.to_thread(self._check_still_kept)
        self.progress.close()
        return self.report

    def fail(self, label: str, reason: str) -> None:
        outcome = Outcome(label, "failed", reason)
        if outcome not in self.report.outcomes:  # two inputs may name the same missing file
            self.report.outcomes.append(outcome)

    async def _resolve(self, item: Wanted, page: ProjectPage | BaseException) -> list[DistFile]:
        """The files `item` asks for, or [] after recording why there are none."""
        if isinstance(page, BaseException):
            self.fail(item.label, _reason(page))
            return []
        partial = " (some sources could not be asked)" if page.stale else ""
        if item.sha256 is not None:
            found = [
                f
                for f in page.files
                if f.sha256 == item.sha256 and item.filename in (None, f.filename)
            ]
            if not found and item.filename:
                # Not listed (shadowed by an earlier source's file of that name, say): a GitLab
                # source can still be asked for it by digest.
                found = await self.services.composed.files.locate(item.sha256, item.filename)
            if not found:
                self.fail(item.label, f"no source lists this sha256 for {item.name}{partial}")
            return found[:1]
        found = [
            f
            for f in page.files
            if item.source in (None, f.source)
            and (version := file_version(f.filename)) is not None
            and item.specifier.contains(version, prereleases=True)
        ]
        if not found:
            self.fail(item.label, f"no file matches ({item.origin}){partial}")
        return found

    async def _fetch(self, file: DistFile) -> None:
        """Keep the file, delivered by the source that listed it (gitlab_pypi_proxy.storage.
        deliveries): offline, a reader of that source alone is served it then. A file cached
        already (by another source, or before delivery records) is downloaded from that source
        once more and verified, as a request of such a reader would be."""
        stores, files = self.services.stores, self.services.composed.files
        label = file.filename
        try:
            cached = await stores.blobs.open(file.sha256, count=False)
            if cached is not None:
                cached.close()
                if not await stores.deliveries.delivered_by(file.sha256, file.source):
                    await files.verify(file.sha256, file.filename, [file], cached.size)
                outcome = Outcome(label, "cached", sha256=file.sha256)
            else:
                others = await files.locate(file.sha256, file.filename)
                candidates = [file, *(c for c in others if c.source != file.source)]
                download = stores.downloads.download(file.sha256, files.opener(candidates))
                await download.wait(self.progress.advance)
                outcome = Outcome(label, "fetched", size=download.written, sha256=file.sha256)
        except Exception as exc:
            outcome = Outcome(label, "failed", _reason(exc))
        self.report.outcomes.append(outcome)
        self.progress.done(outcome)

    async def _cache_project_list(self) -> None:
        """So that an offline proxy answers /simple/ too; a failure here costs no file."""
        with contextlib.suppress(Unavailable, Offline):
            await self.services.composed.plain.project_list()

    def _check_still_kept(self) -> None:
        """A cache smaller than the set evicts early files while later ones arrive."""
        for number, outcome in enumerate(self.report.outcomes):
            if outcome.status != "failed" and outcome.sha256 not in self.services.stores.blobs:
                self.report.outcomes[number] = Outcome(
                    outcome.label, "failed", "evicted again: cache.max_size is too small"
                )


@dataclass(frozen=True)
class Inputs:
    requirements: Sequence[str] = ()
    locks: Sequence[str] = ()
    packages: Sequence[str] = ()
    sources: Sequence[str] = ()
    latest: int | None = None


def read_inputs(inputs: Inputs) -> tuple[list[Wanted], list[Skipped]]:
    """The files the inputs want and the packages they lock that no index serves; raises
    LockFileError naming the bad input, or one that wants no file at all (nothing fetched is
    no proof that a build can run offline)."""
    wanted: list[Wanted] = []
    skipped: list[Skipped] = []
    for path in inputs.requirements:
        wanted += _some(path, parse_requirements(Path(path)))
    for path in inputs.locks:
        locked = _some(path, parse_lock(Path(path)))
        wanted += [w for w in locked if isinstance(w, Wanted)]
        skipped += [s for s in locked if isinstance(s, Skipped)]
    wanted += [package_wanted(spec) for spec in inputs.packages]
    return wanted, skipped


def _some(path: str, found: Sequence[Wanted | Skipped]) -> list[Wanted | Skipped]:
    if any(isinstance(w, Wanted) for w in found):
        return list(found)
    names = sorted({s.name for s in found if isinstance(s, Skipped)})
    if names:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        why = f"every package it locks comes from elsewhere than an index ({listed})"
    else:
        why = "it names no dependency"
    raise LockFileError(f"{path}: nothing to fetch: {why}")


async def run(config: Config, inputs: Inputs, jobs: int, progress: Progress) -> Report:
    """Prefetch everything `inputs` ask for into the cache of `config`."""
    wanted, skipped = read_inputs(inputs)
    # patient: every GitLab request waits for the budget the server's workers share, at the
    # priority of their background work, instead of failing for want of it
    services = Services.start(config, patient=True)
    try:
        prefetch = Prefetch(services, progress, jobs)
        prefetch.report.skipped = skipped
        for name in inputs.sources:
            try:
                wanted += await source_wanted(services, name, inputs.latest)
            except (SourceUnavailable, Refused) as exc:
                prefetch.fail(f"--source {name}", str(exc))
        report = await prefetch.run(wanted)
        # the exact sizes and upload times of the pages read, for an offline proxy to serve
        for details in services.details():
            await details.settled()
        return report
    finally:
        await services.stop()
