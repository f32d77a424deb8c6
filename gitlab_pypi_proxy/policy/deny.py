"""`[policy] deny`: releases and files never served, named the way mirrors such as bandersnatch
filter them: a requirement specifier (`acme-core==1.1.0`, `foo>=2,<2.1`, or a bare name for every
version) or a file-name glob (`*-win_amd64.whl`).

An entry with a glob character (`*`, `?`) or a distribution suffix (`.whl`, `.tar.gz`, ...)
is a file-name glob, matched without regard to case against the whole file name; anything else
is read with `packaging.requirements` (no extras, markers or URL: they say nothing about which
files to refuse). A specifier matches pre-releases too (`foo>=2,<2.1` denies `2.0.5rc1`): a
deny rule is a blocklist, and a resolver that opts into pre-releases must not slip past it. A
version that is no PEP 440 version matches only a rule without a specifier.

`parse` raises ValueError with a one-line reason (check-config and serve print it with the
key); `denied` is the verdict the index asks for each file.
"""

import fnmatch
import re
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

_DIST_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".egg")


@dataclass(frozen=True)
class DenyRule:
    """One `deny` entry: a project (normalized) with a specifier, or a file-name pattern."""

    entry: str  # as written: the 404's reason and the status page name it
    name: str | None = None
    specifier: SpecifierSet | None = None
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, name: str, version: str | None, filename: str) -> bool:
        """Does this rule deny `filename`, of project `name` (normalized) at `version`?"""
        if self.pattern is not None:
            return self.pattern.match(filename.lower()) is not None
        if name != self.name:
            return False
        if not self.specifier:
            return True  # a bare name: every version
        try:
            return version is not None and self.specifier.contains(
                Version(version), prereleases=True
            )
        except InvalidVersion:
            return False


def parse(text: object) -> DenyRule:
    """A deny entry. Raises ValueError saying why it cannot be one."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a requirement such as 'foo>=2,<2.1' or a glob, got {text!r}")
    entry = text.strip()
    if any(c in entry for c in "*?") or entry.lower().endswith(_DIST_SUFFIXES):
        if any(c in entry for c in "/\\") or not entry.isprintable():
            raise ValueError(f"{entry!r}: a file-name glob holds no path separator")
        return DenyRule(entry, pattern=re.compile(fnmatch.translate(entry.lower())))
    try:
        requirement = Requirement(entry)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"{entry!r} is no requirement specifier: {reason}") from None
    if requirement.url or requirement.marker or requirement.extras:
        raise ValueError(f"{entry!r}: a deny rule is a name and versions, no extras, marker or URL")
    name = canonicalize_name(requirement.name)
    return DenyRule(entry, name=name, specifier=requirement.specifier)


def denied(
    rules: tuple[DenyRule, ...], name: str, version: str | None, filename: str
) -> DenyRule | None:
    """The first rule that denies `filename` (project `name`, normalized, at `version`)."""
    return next((r for r in rules if r.matches(name, version, filename)), None)
