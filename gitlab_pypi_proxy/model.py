"""What an index is made of: immutable, serialization-free records shared by every layer."""

from collections.abc import AsyncIterator
from dataclasses import Field, dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from typing import Any


@cache
def _layout(cls: type) -> tuple[tuple[str, ...], tuple[Field[Any], ...]]:
    """A record class's field names and fields, in order (asked once per class: a big page's
    record unpickles tens of thousands of its objects)."""
    found = fields(cls)
    return tuple(f.name for f in found), found


def _setstate(self: Any, state: list[Any]) -> None:
    """Unpickle what an earlier version wrote: fields added since take their defaults."""
    names, found = _layout(type(self))
    for name, value in zip(names, state, strict=False):
        object.__setattr__(self, name, value)
    for f in found[len(state) :]:
        value = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        object.__setattr__(self, f.name, value)


@dataclass(frozen=True, slots=True)
class DistFile:
    """One distribution file as an upstream lists it."""

    filename: str
    sha256: str
    source: str  # name of the configured source that listed it
    url: str  # where that source serves it (absolute upstream URL)
    requires_python: str | None = None
    yanked: str | bool = False  # False, True, or the reason
    size: int | None = None
    upload_time: datetime | None = None
    core_metadata_sha256: str | None = None
    provenance: str | None = None  # PEP 740: where the source serves its provenance (absolute)

    def __getstate__(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    __setstate__ = _setstate


@dataclass(frozen=True, slots=True)
class ProjectPage:
    """The files of one project, as one source or the merged index sees them."""

    name: str  # normalized
    files: tuple[DistFile, ...] = ()
    sources: tuple[str, ...] = ()  # the sources that answered for this name, in priority order
    stale: bool = False  # served from cache because an upstream could not be reached
    fresh_until: float = 0.0  # the earliest expiry of the cached answers it was merged from
    status: str | None = None  # PEP 792 project status as the source says (None: not said)
    status_reason: str | None = None
    held_versions: frozenset[str] = frozenset()  # every file held by the policy: not in `versions`
    # PEP 700 `versions` as the source lists them (a version may have no file left); None: the
    # source lists none, and they are the versions in the file names
    versions: tuple[str, ...] | None = None

    def __getstate__(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    __setstate__ = _setstate


@dataclass(frozen=True, slots=True)
class ProjectList:
    """The normalized project names an index holds."""

    names: frozenset[str] = field(default_factory=frozenset)
    stale: bool = False
    fresh_until: float = 0.0


@dataclass
class FileStream:
    """A file being downloaded from an upstream: its announced size and its bytes, and the
    source they come from (set by whoever chose that source: gitlab_pypi_proxy.index.files).
    `content_range`: the upstream's Content-Range when it answered a byte range with that range
    alone (`size` is then the range's)."""

    size: int | None
    chunks: AsyncIterator[bytes]
    source: str | None = None
    content_range: str | None = None


def parse_time(value: object) -> datetime | None:
    """An upstream's ISO 8601 time (`Z` or an offset; naive means UTC) as an aware UTC datetime."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
