"""What a build needs, read from its inputs: the records every parser returns, and requirements
files (pip-compile, `uv pip compile --generate-hashes`). Lock files: `lock_formats`.

Each parser returns `Wanted` records: a project, the sha256 of one exact file where the input pins
one, or a version specifier where it does not; a lock file also returns `Skipped` for packages no
index serves. Environment markers are kept out of the decision: every listed file is wanted,
whatever platform or Python it is for, because the build that will use the cache may run
elsewhere.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

from gitlab_pypi_proxy.names import is_sha256, normalize


class LockFileError(Exception):
    """An input that cannot be read, as one line naming the file (and line) and the problem."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One thing to prefetch: an exact file (`sha256`) or the files matching `specifier`."""

    name: str  # normalized project name
    origin: str  # where it was asked for, e.g. "requirements.txt:12"
    sha256: str | None = None
    filename: str | None = None  # known from lock files; requirements files name only hashes
    specifier: SpecifierSet = field(default_factory=SpecifierSet)
    source: str | None = None  # only files of this source

    @property
    def label(self) -> str:
        if self.filename:
            return self.filename
        if self.sha256:
            return f"{self.name} (sha256 {self.sha256[:12]}…)"
        return f"{self.name}{self.specifier}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A locked package that no index serves (git, a local path, a direct URL): reported by
    name, never fetched; the build gets it from where the lock file says."""

    name: str  # normalized project name
    origin: str
    kind: str  # "git", "path", "url", "directory", "editable", ...


# --- requirements files (pip-compile, uv pip compile --generate-hashes) ------------------------

_HASH_OPTION = re.compile(r"(?:^|\s)--hash[=\s]\s*([A-Za-z0-9_]+):([0-9A-Fa-f]+)")
_COMMENT = re.compile(r"(^|\s)#.*$")
_INCLUDE = re.compile(r"^(?:-r|--requirement|-c|--constraint)(?:\s+|=)(\S+)$")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, line) with comments dropped and backslash continuations joined."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            yield start, joined
    if pending.strip():
        yield start, pending.strip()


def parse_requirements(path: Path, _seen: frozenset[Path] = frozenset()) -> list[Wanted]:
    """Pins with `--hash=sha256:` give one Wanted per hash; a requirement without hashes gives
    one Wanted for the files of the versions its specifier allows. `-r`/`-c` files are followed;
    other options (index URLs, ...) are ignored."""
    path = path.resolve()
    if path in _seen:
        return []
    text = read_text(path)
    wanted: list[Wanted] = []
    for number, line in _logical_lines(text):
        origin = f"{path.name}:{number}"
        include = _INCLUDE.match(line)
        if include:
            wanted += parse_requirements(path.parent / include.group(1), _seen | {path})
            continue
        hashes = [(algo.lower(), digest.lower()) for algo, digest in _HASH_OPTION.findall(line)]
        spec = _HASH_OPTION.sub(" ", line).strip()
        if not spec or spec.startswith("-"):
            continue  # --index-url, --no-binary, ...: options for pip, not things to fetch
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            raise LockFileError(f"{origin}: not a requirement: {reason}") from None
        if requirement.url:
            raise LockFileError(f"{origin}: {requirement.name} is a direct URL, not from an index")
        name = normalize(requirement.name)
        sha256s = [d for algo, d in hashes if algo == "sha256"]
        if hashes and not sha256s:
            raise LockFileError(f"{origin}: {requirement.name} has hashes but none is sha256")
        bad = [d for d in sha256s if not is_sha256(d)]
        if bad:
            raise LockFileError(f"{origin}: not a sha256: {bad[0][:80]}")
        if sha256s:
            wanted += [Wanted(name, origin, sha256=d) for d in dict.fromkeys(sha256s)]
        else:
            wanted.append(Wanted(name, origin, specifier=requirement.specifier))
    return wanted


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LockFileError(f"{path}: cannot read: {reason}") from None


def filename_of(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def checked_sha256(value: object, origin: str) -> str:
    digest = str(value).lower()
    if not is_sha256(digest):
        raise LockFileError(f"{origin}: not a sha256: {str(value)[:80]}")
    return digest
