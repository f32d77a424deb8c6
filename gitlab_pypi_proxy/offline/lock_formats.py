"""Read the lock files of uv, PEP 751 (pylock.toml), poetry, pdm and pipenv into `Wanted` files.

All five name the sha256 of every file they lock; poetry, pdm and pipenv also lock packages that
no index serves (git, a local path, a direct URL): those come back as `Skipped`, by name, since
the proxy cannot hold them and the build must get them elsewhere. The format is told by the
file's name and, for any other name (a copy, a CI artefact), by its content, never by guessing:
poetry and pdm both write `[[package]]` tables, and read as a uv.lock a poetry.lock has not a
single registry package (an empty prefetch that would claim success).
"""

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from gitlab_pypi_proxy.names import normalize
from gitlab_pypi_proxy.offline.lockfiles import (
    LockFileError,
    Skipped,
    Wanted,
    checked_sha256,
    filename_of,
    read_text,
)

Locked = list[Wanted | Skipped]
KINDS = "a uv.lock, pylock.toml, poetry.lock, pdm.lock or Pipfile.lock"
_VCS = ("git", "hg", "svn", "bzr")


def _toml(path: Path, text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockFileError(f"{path}: not TOML: {exc}") from None


def _table_list(document: dict, key: str, path: Path) -> list[dict]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise LockFileError(f"{path}: {key}: expected an array of tables")
    return items


def _all_of_version(name: str, origin: str, version: object) -> Wanted:
    """A package locked without files: every file of its version, as a pin without hashes."""
    try:
        return Wanted(name, origin, specifier=SpecifierSet(f"=={version}"))
    except InvalidSpecifier:
        raise LockFileError(f"{origin} ({name}): not a version: {str(version)[:80]}") from None


def parse_uv_lock(path: Path, document: dict) -> Locked:
    """Every sdist and wheel of every `[[package]]` that comes from a registry, by its hash."""
    locked: Locked = []
    for number, package in enumerate(_table_list(document, "package", path), 1):
        origin = f"{path.name}: package {number}"
        name = normalize(str(package.get("name", "")))
        source = package.get("source", {})
        if not isinstance(source, dict) or "registry" not in source:
            kind = next(iter(source), "unknown") if isinstance(source, dict) else "unknown"
            if not (isinstance(source, dict) and source.get(kind) == "."):  # the project itself
                locked.append(Skipped(name, origin, str(kind)))
            continue
        artifacts = [package["sdist"]] if isinstance(package.get("sdist"), dict) else []
        artifacts += [w for w in package.get("wheels", []) if isinstance(w, dict)]
        for artifact in artifacts:
            algo, _, digest = str(artifact.get("hash", "")).partition(":")
            if algo != "sha256" or "url" not in artifact:
                raise LockFileError(f"{origin} ({name}): each file needs a url and a sha256 hash")
            filename = filename_of(str(artifact["url"]))
            locked.append(Wanted(name, origin, checked_sha256(digest, origin), filename))
    return locked


def parse_pylock(path: Path, document: dict) -> Locked:
    """Every `wheels` and `sdist` entry of every `[[packages]]` (PEP 751), by its sha256.

    `vcs`, `directory` and `archive` packages are not served by an index and are skipped.
    """
    if "lock-version" not in document:
        raise LockFileError(f"{path}: lock-version: missing; is this a pylock.toml?")
    locked: Locked = []
    for number, package in enumerate(_table_list(document, "packages", path), 1):
        name = normalize(str(package.get("name", "")))
        origin = f"{path.name}: packages {number}"
        kind = next((k for k in ("vcs", "directory", "archive") if k in package), None)
        if kind is not None:
            locked.append(Skipped(name, origin, kind))
            continue
        artifacts = [package["sdist"]] if isinstance(package.get("sdist"), dict) else []
        artifacts += [w for w in package.get("wheels", []) if isinstance(w, dict)]
        for artifact in artifacts:
            hashes = artifact.get("hashes", {})
            filename = artifact.get("name") or filename_of(str(artifact.get("url", "")))
            if not isinstance(hashes, dict) or "sha256" not in hashes or not filename:
                raise LockFileError(f"{origin} ({name}): each file needs a name and a sha256")
            digest = checked_sha256(hashes["sha256"], origin)
            locked.append(Wanted(name, origin, digest, str(filename)))
    return locked


def _listed_files(package: dict, name: str, origin: str) -> list[Wanted]:
    """poetry's and pdm's `files = [{file = NAME | url = URL, hash = "sha256:..."}]`."""
    files = package.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise LockFileError(f"{origin} ({name}): files: expected an array of tables")
    wanted = []
    for entry in files:
        algo, _, digest = str(entry.get("hash", "")).partition(":")
        filename = entry.get("file") or filename_of(str(entry.get("url", "")))
        if algo != "sha256" or not filename:
            raise LockFileError(f"{origin} ({name}): each file needs a name and a sha256 hash")
        wanted.append(Wanted(name, origin, checked_sha256(digest, origin), str(filename)))
    return wanted or [_all_of_version(name, origin, package.get("version", ""))]


def parse_poetry_lock(path: Path, document: dict) -> Locked:
    """Every file of every `[[package]]` from an index: poetry writes no `[package.source]` for
    PyPI and `type = "legacy"` for any other index; git, directory, file and url are skipped."""
    locked: Locked = []
    for number, package in enumerate(_table_list(document, "package", path), 1):
        name = normalize(str(package.get("name", "")))
        origin = f"{path.name}: package {number}"
        source = package.get("source", {})
        kind = source.get("type", "legacy") if isinstance(source, dict) else "unknown"
        if kind != "legacy":
            locked.append(Skipped(name, origin, str(kind)))
            continue
        locked += _listed_files(package, name, origin)
    return locked


def parse_pdm_lock(path: Path, document: dict) -> Locked:
    """Every file of every `[[package]]`; pdm marks what no index serves with a key of its own:
    the VCS (`git = URL`), `path` or `url`."""
    locked: Locked = []
    for number, package in enumerate(_table_list(document, "package", path), 1):
        name = normalize(str(package.get("name", "")))
        origin = f"{path.name}: package {number}"
        kind = next((k for k in (*_VCS, "path", "url") if k in package), None)
        if kind is not None:
            locked.append(Skipped(name, origin, kind))
            continue
        locked += _listed_files(package, name, origin)
    return locked


def parse_pipfile_lock(path: Path, document: dict) -> Locked:
    """Pipfile.lock (pipfile-spec 6, as pipenv writes it): JSON whose `_meta` describes the file
    and every other key is a category (`default`, `develop`, custom ones) of pins by name, each
    `{"version": "==1.0", "hashes": ["sha256:..."], "index": ..., "markers": ...}`. Pins name
    hashes, not files: each hash is one wanted file. VCS, `path` and `file` pins are skipped."""
    locked: Locked = []
    for category, pins in document.items():
        if category == "_meta":
            continue
        if not isinstance(pins, dict) or not all(isinstance(p, dict) for p in pins.values()):
            raise LockFileError(f"{path}: {category}: expected an object of pins by name")
        for raw_name, pin in pins.items():
            name, origin = normalize(raw_name), f"{path.name}: {category} {raw_name}"
            kind = next((k for k in (*_VCS, "path", "file") if k in pin), None)
            if kind is not None:
                locked.append(Skipped(name, origin, kind))
                continue
            hashes = pin.get("hashes", [])
            if not isinstance(hashes, list):
                raise LockFileError(f"{origin}: hashes: expected a list")
            digests = [h.partition(":")[2] for h in map(str, hashes) if h.startswith("sha256:")]
            if hashes and not digests:
                raise LockFileError(f"{origin}: has hashes but none is sha256")
            if digests:
                locked += [Wanted(name, origin, checked_sha256(d, origin)) for d in digests]
            else:
                version = str(pin.get("version", "")).removeprefix("==")
                locked.append(_all_of_version(name, origin, version))
    return locked


Parser = Callable[[Path, dict], Locked]
_BY_NAME: dict[str, Parser] = {
    "uv.lock": parse_uv_lock,
    "poetry.lock": parse_poetry_lock,
    "pdm.lock": parse_pdm_lock,
    "pipfile.lock": parse_pipfile_lock,
}


def _by_name(filename: str) -> Parser | None:
    if re.fullmatch(r"pylock(\.[^.]+)?\.toml", filename.lower()):  # PEP 751: pylock.<name>.toml
        return parse_pylock
    return _BY_NAME.get(filename.lower())


def _by_content(document: dict) -> Parser | None:
    if "_meta" in document:
        return parse_pipfile_lock
    if "lock-version" in document:
        return parse_pylock
    metadata = document.get("metadata")
    if isinstance(metadata, dict) and "lock_version" in metadata:
        return parse_pdm_lock
    if isinstance(metadata, dict) and ("lock-version" in metadata or "content-hash" in metadata):
        return parse_poetry_lock
    if "package" in document:
        return parse_uv_lock
    return None


def parse_lock(path: Path) -> Locked:
    """Any of the five, by its file name or else by its content."""
    text = read_text(path)
    parser = _by_name(path.name)
    if parser is parse_pipfile_lock or (parser is None and text.lstrip().startswith("{")):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LockFileError(f"{path}: not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise LockFileError(f"{path}: not {KINDS}")
    else:
        document = _toml(path, text)
    parser = parser or _by_content(document)
    if parser is None:
        raise LockFileError(f"{path}: not {KINDS}")
    return parser(path, document)
