"""The guard's settings and its rules for one file: cooldown (`min_age`), exemptions, what to do
with files of unknown age, and per-source name rules (`include`/`exclude`).

`parse` reads the raw TOML tables (`[policy]`, each `[[sources]]`, `[audit]`) into frozen
settings; every problem is raised through the caller's `error(key, message)`, so the config
module names file and key as it does everywhere. `hold` and `refusal` are the verdicts the index
wrapper asks for.

The defaults protect without breaking a build that never asked for a rule: no cooldown unless
set, a held file listed yanked (an exact pin reaches its 404 and prints the rule), files of
unknown age allowed from a PEP 503 index (a GitLab file's age is always known: unknown there is
held), malicious versions blocked. Each default's reasons: docs/architecture.md, "The guard's
defaults"; the keys: docs/configuration.md."""

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.names import InvalidName, normalize, validate
from gitlab_pypi_proxy.policy import deny
from gitlab_pypi_proxy.policy.deny import DenyRule

ErrorFor = Callable[[str, str], Exception]  # (key, message) → the config error to raise

DEFAULT_MIN_AGE = "off"
OFF = "off"
_DURATION = re.compile(r"^(\d{1,6})([wdhm])$")
MAX_DURATION = timedelta(days=365)  # a longer hold is a typo (and "999999w" overflows dates)
_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1)}
_UNITS["m"] = timedelta(minutes=1)
_GLOB = re.compile(r"^[A-Za-z0-9._*?-]+$")
_POLICY_KEYS = {
    "min_age",
    "min_age_sources",
    "exempt",
    "unknown_age",
    "vulnerabilities",
    "vulnerable",
    "held",
    "deny",
    "malicious",
}
_AUDIT_KEYS = {"path", "max_size", "keep"}


class InvalidRule(ValueError):
    """A rule that cannot be read; the message is one line."""


def parse_duration(text: str) -> timedelta:
    """ "7d", "12h", "30m", "1w" (or "off", zero) → timedelta. Raises InvalidRule."""
    value = text.strip().lower() if isinstance(text, str) else None
    if value == OFF:
        return timedelta(0)
    match = _DURATION.match(value or "")
    if not match:
        raise InvalidRule(
            f'expected a duration such as "7d", "12h", "30m" or "1w", or "off"; got {text!r}'
        )
    duration = int(match.group(1)) * _UNITS[match.group(2)]
    if duration > MAX_DURATION:
        raise InvalidRule(f"{text!r} is longer than {MAX_DURATION.days}d")
    return duration


def format_duration(duration: timedelta) -> str:
    """The shortest of "2w", "7d", "12h", "90m" that says `duration` exactly."""
    minutes = int(duration.total_seconds()) // 60
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60)):
        if minutes and minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NameGlob:
    """A project-name pattern (`*`, `?`) matched against PEP 503-normalized names."""

    pattern: str  # as written in the configuration
    regex: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, name: str) -> bool:
        return self.regex.match(normalize(name)) is not None


def parse_glob(text: str) -> NameGlob:
    """A name glob such as `acme-*` or `Django*`. Raises InvalidRule."""
    if not isinstance(text, str) or not _GLOB.match(text):
        raise InvalidRule(
            f"not a name pattern: {text!r} (letters, digits, '.', '_', '-', '*' and '?')"
        )
    # Normalized like a name: lower case, each run of "-", "_", "." one "-".
    normalized = re.sub(r"[-_.]+", "-", text).lower()
    return NameGlob(text, re.compile(fnmatch.translate(normalized)))


@dataclass(frozen=True)
class Exemption:
    """`[policy] exempt` entry: a name glob, or one version of one project (`name==version`)."""

    entry: str  # as written
    glob: NameGlob | None = None
    name: str | None = None  # normalized, with `version`
    version: Version | None = None

    def matches(self, name: str, version: str) -> bool:
        if self.glob is not None:
            return self.glob.matches(name)
        if normalize(name) != self.name:
            return False
        try:
            return Version(version) == self.version
        except InvalidVersion:
            return False


def parse_exemption(text: str) -> Exemption:
    """`certifi`, `acme-*` or `urllib3==2.5.1`. Raises InvalidRule."""
    if not isinstance(text, str):
        raise InvalidRule(f"expected a name, a name pattern or name==version, got {text!r}")
    name, pinned, version = text.partition("==")
    if not pinned:
        return Exemption(text, glob=parse_glob(text))
    try:
        return Exemption(text, name=validate(name.strip()), version=Version(version.strip()))
    except InvalidName as exc:
        raise InvalidRule(f"{text!r}: {exc}") from None
    except InvalidVersion:
        raise InvalidRule(f"{text!r}: {version.strip()!r} is not a version") from None


@dataclass(frozen=True)
class SourceRules:
    """A source's `include` (None: every name) and `exclude` name globs."""

    include: tuple[NameGlob, ...] | None = None
    exclude: tuple[NameGlob, ...] = ()


@dataclass(frozen=True)
class PolicySettings:
    min_age: timedelta = field(default_factory=lambda: parse_duration(DEFAULT_MIN_AGE))
    min_age_sources: frozenset[str] = frozenset()  # resolved: default is every `url` source
    exempt: tuple[Exemption, ...] = ()
    unknown_age: Literal["allow", "hold"] = "allow"
    vulnerabilities: Path | None = None  # an OSV export (all.zip)
    vulnerable: Literal["yank", "hide", "off"] = "yank"
    held: Literal["yank", "hide"] = "yank"  # how a held file is listed
    deny: tuple[DenyRule, ...] = ()
    malicious: Literal["block", "yank"] = "block"  # versions with an OSV MAL- advisory
    sources: Mapping[str, SourceRules] = field(default_factory=dict)  # by source name
    gitlab_sources: frozenset[str] = frozenset()  # their files' upload times can be known

    def rules_for(self, source: str) -> SourceRules:
        return self.sources.get(source, _EVERY_NAME)


_EVERY_NAME = SourceRules()


@dataclass(frozen=True)
class AuditSettings:
    path: Path | None = None  # None: no audit trail
    max_size: int = 64 * 2**20  # bytes of the current file before it is rotated
    keep: int = 4  # rotated files kept: path.1 … path.<keep>


@dataclass(frozen=True)
class GuardSettings:
    policy: PolicySettings
    audit: AuditSettings


@dataclass(frozen=True)
class FileFacts:
    """What the rules look at for one file."""

    name: str
    version: str
    upload_time: datetime | None  # as the source says; None when it gives none
    source: str


@dataclass(frozen=True)
class Held:
    """A file held back: the rule (`min_age`, `unknown_age`, a `deny` entry as written,
    `malicious`), a one-line reason for the 404, and when it becomes available (None: not by
    waiting)."""

    rule: str
    reason: str
    until: datetime | None


def is_exempt(policy: PolicySettings, name: str, version: str) -> bool:
    return any(e.matches(name, version) for e in policy.exempt)


def hold(policy: PolicySettings, file: FileFacts, now: datetime) -> Held | None:
    """Whether `file` is held back at `now`, and why; None when it may be served."""
    if not policy.min_age or file.source not in policy.min_age_sources:
        return None
    if is_exempt(policy, file.name, file.version):
        return None
    if file.upload_time is None:
        if file.source in policy.gitlab_sources:
            return Held(
                "min_age",
                f'held by [policy] min_age = "{format_duration(policy.min_age)}": GitLab source '
                f"{file.source!r} has not said when this file was uploaded (its Packages API did "
                "not list the version; the proxy's token needs read_api)",
                None,
            )
        if policy.unknown_age == "allow":
            return None
        return Held(
            "unknown_age",
            f'held by [policy] unknown_age = "hold": source {file.source!r} gives no upload '
            "time for this file",
            None,
        )
    uploaded = file.upload_time
    if uploaded.tzinfo is None:
        uploaded = uploaded.replace(tzinfo=UTC)
    until = uploaded + policy.min_age
    if now >= until:
        return None
    return Held(
        "min_age",
        f'held by [policy] min_age = "{format_duration(policy.min_age)}": uploaded '
        f"{_timestamp(uploaded)}, available from {_timestamp(until)}",
        until,
    )


def blocked(
    policy: PolicySettings, file: FileFacts, filename: str, malicious: tuple[str, ...] = ()
) -> Held | None:
    """Whether `file` (called `filename`) is never served: a `deny` rule names it, or it is a
    version with malicious-package advisories (`malicious`: their ids) under `malicious =
    "block"`. Exemptions do not apply: they are for the cooldown."""
    rule = deny.denied(policy.deny, normalize(file.name), file.version or None, filename)
    if rule is not None:
        return Held(rule.entry, f"denied by [policy] deny rule {rule.entry!r}", None)
    if malicious and policy.malicious == "block":
        ids = ", ".join(malicious)
        return Held(
            "malicious",
            f'blocked: {ids} reports a malicious package ([policy] malicious = "block")',
            None,
        )
    return None


def refusal(policy: PolicySettings, source: str, name: str) -> str | None:
    """Why `source` does not serve project `name` (its include/exclude rules), or None."""
    rules = policy.rules_for(source)
    refused = f"{normalize(name)} is not served from source {source!r}"
    excluded = next((g for g in rules.exclude if g.matches(name)), None)
    if excluded is not None:
        return f"{refused}: its exclude has {excluded.pattern!r}"
    if rules.include is not None and not any(g.matches(name) for g in rules.include):
        return f"{refused}: not in its include list"
    return None


class _Table:
    """One raw table, raising the caller's config errors under `prefix`."""

    def __init__(self, table: Mapping[str, Any], prefix: str, error: ErrorFor) -> None:
        if not isinstance(table, Mapping):
            raise error(prefix.rstrip("."), "expected a table")
        self.table, self.prefix, self._error = table, prefix, error

    def error(self, key: str, message: str) -> Exception:
        return self._error(f"{self.prefix}{key}", message)

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise self.error(unknown[0], "unknown key")

    def string(self, key: str, default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__}")
        if "\0" in value:
            raise self.error(key, "must not hold a NUL character")
        return value

    def choice(self, key: str, default: str, choices: Sequence[str]) -> Any:
        value = self.string(key, default).lower()
        if value not in choices:
            raise self.error(key, f"expected one of {', '.join(map(repr, choices))}")
        return value

    def each(self, key: str, read: Callable[[str], Any]) -> tuple[Any, ...] | None:
        """A list of strings, each read by `read` (None when the key is absent)."""
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a list of strings")
        try:
            return tuple(read(v) for v in value)
        except InvalidRule as exc:
            raise self.error(key, str(exc)) from None

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {type(value).__name__}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        if value > maximum:
            raise self.error(key, f"must be at most {maximum}")
        return value


def _deny_rule(text: str) -> DenyRule:
    try:
        return deny.parse(text)
    except ValueError as exc:
        raise InvalidRule(str(exc)) from None


def _path(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def parse(
    policy: Mapping[str, Any],
    sources: Sequence[Mapping[str, Any]],
    audit: Mapping[str, Any],
    *,
    base: Path,
    cache_directory: Path,
    error: ErrorFor,
) -> GuardSettings:
    """The guard's settings from the raw `[policy]` and `[audit]` tables and the `[[sources]]`
    array (only their `name`, `url`, `include` and `exclude` are read here). `base` is the
    configuration file's directory (relative paths start there). Problems are raised as
    `error("policy.min_age", "...")`, `error("sources[1].include", "...")` and so on."""
    p = _Table(policy, "policy.", error)
    p.check_keys(_POLICY_KEYS)
    names: list[str] = []
    url_sources: set[str] = set()
    gitlab_sources: set[str] = set()
    rules: dict[str, SourceRules] = {}
    for i, raw in enumerate(sources):
        s = _Table(raw, f"sources[{i}].", error)
        name = str(s.table.get("name", ""))
        names.append(name)
        if "url" in s.table:
            url_sources.add(name)
        if "gitlab_project" in s.table or "gitlab_group" in s.table:
            gitlab_sources.add(name)
        include = s.each("include", parse_glob)
        if include == ():
            raise s.error("include", "is empty: leave it out to serve every name")
        rules[name] = SourceRules(include=include, exclude=s.each("exclude", parse_glob) or ())

    try:
        min_age = parse_duration(p.table.get("min_age", DEFAULT_MIN_AGE))
    except InvalidRule as exc:
        raise p.error("min_age", str(exc)) from None
    listed = p.each("min_age_sources", str)
    for name in listed or ():
        if name not in names:
            raise p.error("min_age_sources", f"no source named {name!r}")
    vulnerabilities = None
    if "vulnerabilities" in p.table:
        vulnerabilities = _path(base, p.string("vulnerabilities", ""))
        if not vulnerabilities.is_file():
            raise p.error("vulnerabilities", f"no such file: {vulnerabilities}")

    a = _Table(audit, "audit.", error)
    a.check_keys(_AUDIT_KEYS)
    audit_path = a.string("path", str(cache_directory / "audit.jsonl"))
    from gitlab_pypi_proxy.config import (
        parse_size,
    )  # here: gitlab_pypi_proxy.config imports this module

    try:
        max_size = parse_size(a.table.get("max_size", "64MiB"))
    except ValueError as exc:
        raise a.error("max_size", str(exc)) from None
    if max_size < 2**16:
        raise a.error("max_size", "must be at least 64KiB")

    return GuardSettings(
        policy=PolicySettings(
            min_age=min_age,
            min_age_sources=frozenset(url_sources if listed is None else listed),
            exempt=p.each("exempt", parse_exemption) or (),
            unknown_age=p.choice("unknown_age", "allow", ("allow", "hold")),
            vulnerabilities=vulnerabilities,
            vulnerable=p.choice("vulnerable", "yank", ("yank", "hide", "off")),
            held=p.choice("held", "yank", ("yank", "hide")),
            deny=p.each("deny", _deny_rule) or (),
            malicious=p.choice("malicious", "block", ("block", "yank")),
            sources=rules,
            gitlab_sources=frozenset(gitlab_sources),
        ),
        audit=AuditSettings(
            path=None if audit_path.strip().lower() == OFF else _path(base, audit_path),
            max_size=max_size,
            keep=a.integer("keep", 4, minimum=1, maximum=1000),
        ),
    )
