"""Vulnerable versions from an OSV export: which advisories affect `name==version`.

`load` reads the PyPI ecosystem's `all.zip` (one JSON advisory per member, no network) into a
`VulnerabilityIndex`: `advisories` answers for one version, `affected` for a whole page in one
pass per range, `reason` gives the PEP 592 yank reason (`GHSA-xxxx (CVE-yyyy)`), `fixed_in` the
versions an advisory's ranges name as fixed. Versions and ranges are read as the OSV schema says,
compared as PEP 440 versions; what cannot be read that way (GIT ranges, events that are no PEP
440 version, withdrawn advisories, bad members) is ignored and counted, never guessed. A file that
is no zip raises OsvError: serving with no advisories would lift the protection silently, so the
caller keeps the index it had. `load` takes seconds of CPU on the real export: run it in a thread.
How an advisory is read, and the index's cost: docs/architecture.md, "The advisories index"."""

import json
import os
import zipfile
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from packaging.utils import canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.zip_member import BadMember, read_member

ECOSYSTEM = "PyPI"
REASON_GROUPS = 5  # a yank reason names this many advisories at most: clients print it whole
MAX_MEMBER = 16 * 2**20  # no real advisory comes near this; a bigger member is not read
MAX_SUMMARY = 500  # a summary is one line; the long `details` are not kept
_EVALUATED = ("ECOSYSTEM", "SEMVER")
_EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
_ZERO = Version("0")  # stands in for introduced "0" when sorting; never compared with a query
# Which id leads a group of advisories that alias each other (the rest go in parentheses).
_LEAD_PREFIXES = ("GHSA-", "PYSEC-", "MAL-")
MALICIOUS = "MAL-"  # OSV's malicious-package records (the OpenSSF malicious-packages feed)


class OsvError(Exception):
    """The export as a whole cannot be read; the message is one line."""


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...] = ()
    summary: str | None = field(default=None, compare=False)
    # the id that leads its label: a GHSA id before PYSEC, MAL, then others (CVE) by name
    lead: tuple[int, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lead", min(map(_lead_rank, (self.id, *self.aliases))))

    @property
    def malicious_id(self) -> str | None:
        """The OSV malicious-package id (`MAL-...`) this advisory is or aliases, if any."""
        return next((i for i in (self.id, *self.aliases) if i.startswith(MALICIOUS)), None)


@dataclass
class LoadStats:
    members: int = 0  # zip members that were read as JSON advisories
    advisories: int = 0  # advisories with at least one PyPI package entry indexed
    withdrawn: int = 0
    skipped_members: int = 0  # not readable, not JSON, too big, or not an advisory
    ignored_ranges: int = 0  # GIT (or unknown) ranges
    unparsable_ranges: int = 0  # ranges with an event that is no PEP 440 version


_AFTER_ALL = object()  # a limit of "*": no upper bound


@dataclass(frozen=True)
class _Range:
    """One range as OSV's evaluation sees it: sorted events, each with the point from which its
    condition holds. A version satisfies the events of a prefix of this list (introduced x and
    fixed x from x on, last_affected x from just after x), and the last one it satisfies says
    whether it is affected."""

    starts: tuple[tuple[Version | None, bool], ...]  # (version, from just after it); None: -inf
    affected: tuple[bool, ...]  # after each event: introduced → True, fixed/last_affected → False
    limit: Version | object  # versions from here on are outside the range; _AFTER_ALL if none

    def runs(self, versions: Sequence[Version]) -> Iterator[tuple[int, int]]:
        """The [lo, hi) index runs of the sorted `versions` that this range affects."""
        end = len(versions) if self.limit is _AFTER_ALL else bisect_left(versions, self.limit)
        starts = [
            0 if at is None else (bisect_right if after else bisect_left)(versions, at)
            for at, after in self.starts
        ]
        starts.append(len(versions))
        for i, affected in enumerate(self.affected):
            lo, hi = starts[i], min(starts[i + 1], end)
            if affected and lo < hi:
                yield lo, hi


@dataclass(frozen=True)
class _Affected:
    advisory: Advisory
    versions: frozenset[str]  # canonical forms (canonicalize_version) of the listed versions
    ranges: tuple[_Range, ...]


@dataclass
class VulnerabilityIndex:
    """Advisories by normalized project name. Immutable once built; safe to share."""

    by_name: dict[str, tuple[_Affected, ...]] = field(default_factory=dict)
    stats: LoadStats = field(default_factory=LoadStats)
    identity: str = ""  # the export read: its inode, mtime and size ("": none)

    def affected(self, name: str, versions: Iterable[str]) -> dict[str, tuple[Advisory, ...]]:
        """Of `versions` of project `name` (any spelling), those some advisory affects, with
        their advisories in file order. One pass per range over the sorted versions: a whole
        page costs far less than its versions asked one by one."""
        entries = self.by_name.get(canonicalize_name(name))
        if not entries:
            return {}
        texts = list(dict.fromkeys(versions))
        by_canonical: dict[str, list[int]] = {}
        parsed: list[tuple[Version, int]] = []
        for i, text in enumerate(texts):
            by_canonical.setdefault(canonicalize_version(text), []).append(i)
            with suppress(InvalidVersion):  # if not a version, it matches listed ones only
                parsed.append((Version(text), i))
        parsed.sort(key=lambda pair: pair[0])
        ordered = [version for version, _ in parsed]
        found: list[dict[Advisory, None]] = [{} for _ in texts]
        for entry in entries:
            if len(entry.versions) < len(by_canonical):
                hits = (i for c in entry.versions for i in by_canonical.get(c, ()))
            else:
                hits = (i for c, ids in by_canonical.items() if c in entry.versions for i in ids)
            for i in hits:
                found[i][entry.advisory] = None
            for r in entry.ranges:
                for lo, hi in r.runs(ordered):
                    for _, i in parsed[lo:hi]:
                        found[i][entry.advisory] = None
        return {texts[i]: tuple(hits) for i, hits in enumerate(found) if hits}

    def malicious(self, name: str, versions: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Of `versions` of project `name`, those a malicious-package advisory affects, with
        those advisories' MAL- ids."""
        found = {v: malicious_ids(a) for v, a in self.affected(name, versions).items()}
        return {v: ids for v, ids in found.items() if ids}

    def advisories(self, name: str, version: str) -> tuple[Advisory, ...]:
        """The advisories that affect `name==version`, in file order."""
        return self.affected(name, (version,)).get(version, ())

    def fixed_in(self, name: str, advisory: Advisory) -> tuple[str, ...]:
        """The versions of project `name` that `advisory`'s ranges name as fixed, in order."""
        fixed: dict[str, None] = {}
        for entry in self.by_name.get(canonicalize_name(name), ()):
            if entry.advisory != advisory:
                continue
            for r in entry.ranges:
                for (at, after), affected in zip(r.starts, r.affected, strict=True):
                    if at is not None and not affected and not after:  # not last_affected
                        fixed[str(at)] = None
        return tuple(fixed)

    def reasons(self, name: str, versions: Iterable[str]) -> dict[str, str]:
        """The yank reason of each of `versions` that some advisory affects."""
        return {v: reason(found) for v, found in self.affected(name, versions).items()}

    def reason(self, name: str, version: str) -> str | None:
        """The yank reason for `name==version`, or None when no advisory affects it."""
        found = self.advisories(name, version)
        return reason(found) if found else None


def malicious_ids(advisories: Iterable[Advisory]) -> tuple[str, ...]:
    """The MAL- ids among `advisories` (each advisory's own or an alias), in order."""
    return tuple(dict.fromkeys(i for a in advisories if (i := a.malicious_id)))


def reason(advisories: Iterable[Advisory], most: int = REASON_GROUPS) -> str:
    """`GHSA-xxxx (CVE-yyyy, PYSEC-zzzz)` per group of advisories that alias each other, groups
    joined by "; " in order of their leading id; past `most` groups, how many more there are."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    advisories = list(advisories)
    for advisory in advisories:
        ids = (advisory.id, *advisory.aliases)
        for key in ids:
            parent.setdefault(key, key)
        for key in ids[1:]:
            parent[root(key)] = root(ids[0])
    groups: dict[str, list[Advisory]] = {}
    for advisory in advisories:
        groups.setdefault(root(advisory.id), []).append(advisory)
    ranked = sorted((min(a.lead for a in members), members) for members in groups.values())
    parts = []
    for (_, lead), members in ranked[:most]:
        rest = sorted({i for a in members for i in (a.id, *a.aliases)} - {lead})
        parts.append(f"{lead} ({', '.join(rest)})" if rest else lead)
    if len(ranked) > most:
        parts.append(f"and {len(ranked) - most} more")
    return "; ".join(parts)


def _lead_rank(advisory_id: str) -> tuple[int, str]:
    rank = next((i for i, p in enumerate(_LEAD_PREFIXES) if advisory_id.startswith(p)), None)
    return (len(_LEAD_PREFIXES) if rank is None else rank, advisory_id)


class _Builder:
    """Turns advisory documents into index entries, sharing parsed versions and strings."""

    def __init__(self) -> None:
        self.stats = LoadStats()
        self.by_name: dict[str, list[_Affected]] = {}
        self._canonical: dict[str, str] = {}
        self._parsed: dict[str, Version | None] = {}

    def add(self, document: Any) -> None:
        """Index one advisory document; raises ValueError (or TypeError) when it is malformed."""
        if not isinstance(document, dict) or not isinstance(document.get("id"), str):
            raise ValueError("not an advisory")
        if document.get("withdrawn"):
            self.stats.withdrawn += 1
            return
        aliases = document.get("aliases") or []
        if not isinstance(aliases, list):
            raise ValueError("aliases is not a list")
        summary = document.get("summary")
        summary = summary[:MAX_SUMMARY] if isinstance(summary, str) and summary else None
        advisory = Advisory(document["id"], tuple(str(a) for a in aliases), summary)
        entries = []
        for affected in document.get("affected") or []:
            package = affected.get("package") or {}
            if package.get("ecosystem") != ECOSYSTEM or not isinstance(package.get("name"), str):
                continue
            versions = affected.get("versions") or []
            ranges = affected.get("ranges") or []
            if not isinstance(versions, list) or not isinstance(ranges, list):
                raise ValueError("versions or ranges is not a list")
            listed = frozenset(self._canonical_of(str(v)) for v in versions)
            compiled = tuple(r for r in map(self._range, ranges) if r is not None)
            if listed or compiled:
                entries.append((canonicalize_name(package["name"]), listed, compiled))
        # Only once the whole document was read: a malformed one adds nothing.
        for name, listed, compiled in entries:
            self.by_name.setdefault(name, []).append(_Affected(advisory, listed, compiled))
        if entries:
            self.stats.advisories += 1

    def _canonical_of(self, version: str) -> str:
        canonical = self._canonical.get(version)
        if canonical is None:
            canonical = self._canonical[version] = canonicalize_version(version)
        return canonical

    def _version(self, text: str) -> Version | None:
        if text not in self._parsed:
            try:
                self._parsed[text] = Version(text)
            except InvalidVersion:
                self._parsed[text] = None
        return self._parsed[text]

    def _range(self, raw: Any) -> _Range | None:
        if raw.get("type") not in _EVALUATED:
            self.stats.ignored_ranges += 1
            return None
        events: list[tuple[Version | None, int, bool]] = []  # (version, order at it, affected)
        limits: list[Version | object] = []
        for event in raw.get("events") or []:
            kind = next((k for k in _EVENT_KINDS if k in event), None)
            if kind is None:
                continue
            text = str(event[kind])
            if kind == "introduced" and text == "0":
                events.append((None, 0, True))
                continue
            if kind == "limit" and "*" in text:
                limits.append(_AFTER_ALL)
                continue
            at = self._version(text)
            if at is None:
                self.stats.unparsable_ranges += 1
                return None
            if kind == "limit":
                limits.append(at)
            else:
                # at one version: introduced, then fixed (both from that version on), then
                # last_affected (from just after it)
                order = {"introduced": 0, "fixed": 1, "last_affected": 2}[kind]
                events.append((at, order, kind == "introduced"))
        if not any(affected for _, _, affected in events):
            return None  # the schema requires an introduced event; without one nothing is hit
        events.sort(key=lambda e: (e[0] is not None, e[0] or _ZERO, e[1]))
        limit = _AFTER_ALL if not limits or _AFTER_ALL in limits else max(limits)  # type: ignore[type-var]
        return _Range(
            starts=tuple((at, order == 2) for at, order, _ in events),
            affected=tuple(affected for _, _, affected in events),
            limit=limit,
        )


def _members(handle: BinaryIO, archive: zipfile.ZipFile, stats: LoadStats) -> Iterator[bytes]:
    for info in archive.infolist():
        if info.is_dir() or not info.filename.endswith(".json"):
            continue
        try:  # within what the member declares and MAX_MEMBER, however it is compressed
            yield read_member(handle, info, MAX_MEMBER)
        except (BadMember, OSError):
            stats.skipped_members += 1


def load(path: str | Path) -> VulnerabilityIndex:
    """Read an OSV export. Bad members are skipped and counted in `stats`; a file that cannot
    be read as a zip at all raises OsvError."""
    builder = _Builder()
    try:
        with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            for data in _members(handle, archive, builder.stats):
                try:
                    document = json.loads(data)
                    builder.add(document)
                except (ValueError, TypeError, AttributeError, RecursionError):
                    # json's errors are ValueErrors; a field of the wrong type fails as one of
                    # the others inside `add`
                    builder.stats.skipped_members += 1
                    continue
                builder.stats.members += 1
            read = os.fstat(handle.fileno())  # after reading: a write meanwhile shows
    except FileNotFoundError:
        raise OsvError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise OsvError(f"{path}: not a readable zip file: {exc}") from None
    by_name = {name: tuple(entries) for name, entries in builder.by_name.items()}
    identity = f"{read.st_ino}-{read.st_mtime_ns}-{read.st_size}"
    return VulnerabilityIndex(by_name=by_name, stats=builder.stats, identity=identity)
