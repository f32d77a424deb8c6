"""The supply-chain guard over the index ([policy], each source's include/exclude).

`NameRules` (around one source's answers, before merging): a name the source's `include` leaves
out or its `exclude` names is "not here" in that source, so no name falls through to a source
that refuses it. `Guarded` (around the merged index): a quarantined project (PEP 792) lists no
files; files the cooldown holds, a `deny` rule names or a malicious-package advisory blocks are
listed yanked with the rule as the reason (or hidden), and versions with advisories yanked with
their ids (or hidden). `check_file` answers such a file's URL (and its sidecars') with a 404
naming the rule and when the file becomes available; a denied file is refused by its name and
by every name its digest was listed under. Pages are judged when built (the memo keeps them no
longer than the first hold's end); big ones in a thread. What a file's check needs of its
project's page (its status; the file's upload time and source where a hold can apply) is kept
per worker while the page is fresh and its project's generation has not moved: a client reads
a wheel's metadata by ranges, a few requests per wheel, and each read a page of thousands of
files again."""

import asyncio
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.errors import NotFound, Offline, Unavailable
from gitlab_pypi_proxy.index.index_protocol import Answer, Index, Readable, SourceAnswers
from gitlab_pypi_proxy.model import DistFile, ProjectList, ProjectPage
from gitlab_pypi_proxy.names import file_project_name, file_version
from gitlab_pypi_proxy.policy import osv, rules
from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.policy.rules import PolicySettings
from gitlab_pypi_proxy.storage.locations import FileLocations

_IN_A_THREAD = 200  # files on a page past which it is judged in a thread
_CHECKS_REMEMBERED = 10_000  # (project, reader, file) checks' facts kept per worker
_CheckKey = tuple[str, Readable, str]
DERIVED = (".metadata", ".provenance")  # files served from a distribution file's rights


def distribution_of(filename: str) -> str:
    """The distribution file a file URL's name is derived from (itself if none)."""
    for suffix in DERIVED:
        if filename.endswith(suffix):
            return filename.removesuffix(suffix)
    return filename


class NameRules:
    """One source's answers with its include/exclude rules applied."""

    def __init__(self, inner: SourceAnswers, policy: PolicySettings) -> None:
        self.inner, self.policy = inner, policy

    @property
    def name(self) -> str:
        return self.inner.name

    async def page(self, name: str) -> Answer[ProjectPage | None]:
        if rules.refusal(self.policy, self.name, name):
            return Answer(None, stale=False, fresh_until=math.inf)
        return await self.inner.page(name)

    async def names(self) -> Answer[frozenset[str]]:
        answer = await self.inner.names()
        kept = frozenset(n for n in answer.value if not rules.refusal(self.policy, self.name, n))
        return replace(answer, value=kept)

    async def has_files(self, name: str, found: Callable[[], None]) -> Answer[bool]:
        return await self.inner.has_files(name, found)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Listing:
    """What a file's read check needs of its project's page."""

    status: str | None
    status_reason: str | None
    # where a hold can apply, the file as listed: its upload time and source (else not sought)
    listed: tuple[datetime | None, str] | None


@dataclass(frozen=True)
class Judged:
    page: ProjectPage
    held: int
    yanked: int


def judge(
    page: ProjectPage, policy: PolicySettings, advisories: Advisories, now: datetime
) -> Judged:
    """The page as the policy lets it be listed (pure; may take a while on a big page)."""
    if page.status == "quarantined":
        return Judged(replace(page, files=(), versions=None), len(page.files), 0)
    versions = {f.filename: file_version(f.filename) for f in page.files}
    listed = {v for v in versions.values() if v} | set(page.versions or ())
    found: dict[str, tuple[osv.Advisory, ...]] = {}
    if policy.vulnerable != "off" or policy.malicious == "block":
        found = advisories.index.affected(page.name, listed)
    reasons: dict[str, str] = {}
    if policy.vulnerable != "off":
        reasons = {v: osv.reason(a) for v, a in found.items()}
    malicious: dict[str, tuple[str, ...]] = {}
    if policy.malicious == "block":
        malicious = {v: ids for v, a in found.items() if (ids := osv.malicious_ids(a))}
    files: list[DistFile] = []
    held = yanked = 0
    until = page.fresh_until
    # versions no file of which is listed as it is: left out of a source's own `versions` too
    held_versions: set[str] = set()
    if policy.vulnerable == "hide":
        held_versions |= {v for v in page.versions or () if v in reasons}
    served_versions: set[str] = set()
    for file in page.files:
        version = versions[file.filename] or ""
        facts = rules.FileFacts(page.name, version, file.upload_time, file.source)
        refused = rules.blocked(policy, facts, file.filename, malicious.get(version, ()))
        verdict = refused or rules.hold(policy, facts, now)
        # a blocked version's reason names its malicious advisories already
        advisory = None if refused and refused.rule == "malicious" else reasons.get(version)
        if verdict is not None:
            held += 1
            if verdict.until is not None:
                until = min(until, verdict.until.timestamp())
        hidden = (verdict and policy.held == "hide") or (advisory and policy.vulnerable == "hide")
        (held_versions if verdict or hidden else served_versions).add(version)
        if hidden:
            continue
        yanked += advisory is not None
        notes = [n for n in (verdict and verdict.reason, advisory) if n]
        if notes:
            said = file.yanked if isinstance(file.yanked, str) and file.yanked else None
            file = replace(file, yanked="; ".join(([said] if said else []) + notes))
        files.append(file)
    judged = replace(
        page,
        files=tuple(files),
        fresh_until=until,
        held_versions=frozenset(held_versions - served_versions),
    )
    return Judged(judged, held, yanked)


class Guarded:
    def __init__(
        self,
        inner: Index,
        policy: PolicySettings,
        advisories: Advisories,
        locations: FileLocations,
        url_sources: frozenset[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        generation: Callable[[str], Hashable] = lambda name: None,
    ) -> None:
        self.inner, self.policy, self.advisories = inner, policy, advisories
        self.locations = locations
        self.url_sources = url_sources  # where a project status (PEP 792) can come from
        self.clock = clock
        self.generation = generation  # of a project's pages: moves when they change
        self._listings: TTLMemo[_CheckKey, tuple[Hashable, _Listing]] = TTLMemo(
            _CHECKS_REMEMBERED, clock=time.time
        )
        named = any(r.include is not None or r.exclude for r in policy.sources.values())
        # Can the cooldown or a name rule refuse a file? Else a file's page is looked up only
        # for a quarantine, and only for files a public index listed.
        self.holds = bool(policy.min_age and policy.min_age_sources) or named
        # Can a deny rule or a malicious-package advisory refuse a file (by its names alone)?
        self.blocks = bool(policy.deny) or (
            policy.malicious == "block" and advisories.path is not None
        )
        self._denied_names = frozenset(r.name for r in policy.deny if r.name)
        self._deny_globs = any(r.pattern is not None for r in policy.deny)

    def refusal(self, name: str) -> str | None:
        """Why some source refuses `name`, if one does (for the 404's line)."""
        reasons = (rules.refusal(self.policy, s, name) for s in self.policy.sources)
        return next((r for r in reasons if r), None)

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        try:
            page = await self.inner.project_page(name, allowed)
        except NotFound:
            refused = self.refusal(name)
            if refused:
                raise NotFound(refused) from None
            raise
        policy = self.policy
        advised = (policy.vulnerable != "off" or policy.malicious == "block") and (
            name in self.advisories.index.by_name
        )
        cooled = bool(policy.min_age) and any(s in policy.min_age_sources for s in page.sources)
        denied = self._deny_globs or name in self._denied_names
        if not (advised or cooled or denied or page.status == "quarantined"):
            return page  # nothing to judge: no page pays for a policy that cannot touch it
        if len(page.files) > _IN_A_THREAD or advised:
            judged = await asyncio.to_thread(
                judge, page, self.policy, self.advisories, self.clock()
            )
        else:
            judged = judge(page, self.policy, self.advisories, self.clock())
        if judged.held:
            metrics.POLICY_HELD.inc(judged.held)
        if judged.yanked:
            metrics.POLICY_YANKED.inc(judged.yanked)
        return judged.page

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        return await self.inner.project_list(allowed)

    async def check_file(self, sha256: str, filename: str, allowed: Readable = None) -> None:
        await self.inner.check_file(sha256, filename, allowed)
        distribution = distribution_of(filename)
        listed: list[DistFile] | None = None
        if self.blocks:
            listed = await self.locations.of(sha256)
            self._refuse_blocked({distribution} | {f.filename for f in listed})
        if not self.holds:
            # only a quarantine can refuse it, and only a public index's page says one
            if listed is None:
                listed = await self.locations.of(sha256) if self.url_sources else []
            if not any(f.source in self.url_sources for f in listed):
                return
        project = file_project_name(distribution)
        if project is None:
            return
        try:
            listing = await self._listing(project, sha256, allowed)
        except NotFound:
            refused = self.refusal(project)
            if refused:
                _refused("include/exclude")
                raise NotFound(refused) from None
            return  # not listed anywhere now: the file side says whether anyone has it
        except (Unavailable, Offline):
            return  # judged when it was listed; an upstream down must not stop cached files
        if listing.status == "quarantined":
            _refused("quarantine")
            why = f": {listing.status_reason}" if listing.status_reason else ""
            raise NotFound(f"{project} is quarantined by its index (PEP 792){why}")
        if listing.listed is None:
            return
        version = file_version(distribution) or ""
        facts = rules.FileFacts(project, version, *listing.listed)
        verdict = rules.hold(self.policy, facts, self.clock())
        if verdict is not None:
            _refused(verdict.rule)
            raise NotFound(f"{distribution} is {verdict.reason}")

    async def _listing(self, project: str, sha256: str, allowed: Readable) -> _Listing:
        """What the check of file `sha256` needs of `project`'s page as `allowed` reads it.
        Raises what the page raises."""
        key = (project, allowed, sha256 if self.holds else "")
        generation = self.generation(project)  # read before the page, so a racing change wins
        kept = self._listings.get(key)
        if kept is not None and kept[0] == generation:
            return kept[1]
        page = await self.inner.project_page(project, allowed)
        file = next((f for f in page.files if f.sha256 == sha256), None) if self.holds else None
        listed = (file.upload_time, file.source) if file is not None else None
        listing = _Listing(page.status, page.status_reason, listed)
        if not page.stale:
            self._listings.set(key, (generation, listing), until=page.fresh_until)
        return listing

    def _refuse_blocked(self, filenames: set[str]) -> None:
        """Raise NotFound naming the rule or the advisory if any of `filenames` (the URL's,
        and every name its digest was listed under) is denied or blocked."""
        for filename in sorted(filenames):
            project = file_project_name(filename)
            if project is None:
                continue
            version = file_version(filename) or ""
            malicious: tuple[str, ...] = ()
            if self.policy.malicious == "block":
                found = self.advisories.index.malicious(project, (version,))
                malicious = found.get(version, ())
            facts = rules.FileFacts(project, version, None, "")
            verdict = rules.blocked(self.policy, facts, filename, malicious)
            if verdict is not None:
                _refused(verdict.rule)
                raise NotFound(f"{filename} is {verdict.reason}")


def _refused(rule: str) -> None:
    """Count a file request the guard refused, in all and by its rule."""
    metrics.POLICY_REFUSED.inc()
    metrics.POLICY_RULES.labels(rule).inc()
