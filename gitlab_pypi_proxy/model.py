"""What an index is made of: immutable records shared by every layer, from the sources that
parse them to the routes that render them. They know nothing of how they are stored: the stores
encode them (gitlab_pypi_proxy.storage.record_format)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime


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
