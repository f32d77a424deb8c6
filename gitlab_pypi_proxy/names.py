"""Project names and file names: validation and PEP 503 normalization."""

import re
from collections.abc import Iterable

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from gitlab_pypi_proxy.errors import BadRequest

# PEP 508 / core metadata: the only shape a project name may have.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_NAME = 200


class InvalidName(BadRequest, ValueError):
    """A name that no index could hold; the message is a one-line reason for the client."""


def normalize(name: str) -> str:
    """The PEP 503 normalized form of a valid project name."""
    return canonicalize_name(name)


def validate(name: str) -> str:
    """Return `name` normalized, or raise InvalidName saying why it is not a project name."""
    if len(name) > _MAX_NAME:
        raise InvalidName(f"project name longer than {_MAX_NAME} characters")
    if not _VALID_NAME.match(name):
        raise InvalidName(f"not a valid project name: {name[:80]!r}")
    return normalize(name)


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


_NOT_IN_A_FILENAME = re.compile(r"[\x00-\x1f\x7f/\\]")  # separators and control characters


def validate_filename(filename: str) -> str:
    """A distribution file name as it may appear in a URL path: no separators, no control chars."""
    if (
        not filename
        or len(filename) > 255
        or filename in {".", ".."}
        or _NOT_IN_A_FILENAME.search(filename)
    ):
        raise InvalidName(f"not a valid distribution file name: {filename[:80]!r}")
    return filename


def file_project_name(filename: str) -> str | None:
    """The normalized project name in a wheel or sdist file name, or None when it is not one."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def file_versions(filenames: Iterable[str]) -> set[str]:
    """The versions in these file names (those that are wheel or sdist names). A wheel's
    version is worked out once per spelling: a version's wheels (one per platform, dozens for
    some projects) spell it alike, and parsing each name whole (its tags) is what costs."""
    versions: set[str] = set()
    found: set[str] = set()  # wheels' version parts already seen in a valid name
    for filename in filenames:
        spelled = wheel_version_part(filename)
        if spelled is not None and spelled in found:
            continue
        version = file_version(filename)
        if version:
            versions.add(version)
            if spelled is not None:
                found.add(spelled)
    return versions


def wheel_version_part(filename: str) -> str | None:
    """The version as a wheel's name spells it (its second part), unchecked; None for a name
    that is no wheel's."""
    if not filename.endswith(".whl"):
        return None
    parts = filename.split("-", 2)
    return parts[1] if len(parts) == 3 else None


def file_version(filename: str) -> str | None:
    """The version in a wheel or sdist file name, or None when the name is not one."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
