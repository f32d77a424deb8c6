"""The seam for where distribution files are kept: a content-addressed blob store.

A blob is the verified bytes of one file, addressed by their sha256. A store takes a blob from a
local spool file that a download (gitlab_pypi_proxy.storage.downloads) wrote and verified, put if
absent; hands it out (size, mtime, byte ranges streamed in constant memory, its bytes checked on the
way out); deletes it; and lists what it holds for `cache stats`, `verify` and `export`. How much it
may hold and what it evicts is its own business.

Today's implementation is gitlab_pypi_proxy.storage.local_blobs (a directory, its SQLite index,
eviction). Another (an S3 bucket) would take the same calls; nothing outside
gitlab_pypi_proxy.storage and the composition root knows which one runs."""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


class CacheUnwritable(Exception):
    """The store cannot take a new blob now: the file is served without being kept."""


@dataclass
class Spool:
    """A local file a download writes a blob to before the store takes it. Its writer holds it
    (an flock on it, in the local store) until it is put or discarded, so that a spool nobody
    holds is known to be a leftover."""

    sha256: str
    path: str
    handle: BinaryIO  # unbuffered: what `written` counts, readers can read
    size: int | None = None  # as the upstream announced it
    written: int = 0


@dataclass(frozen=True)
class BlobStats:
    entries: int
    bytes: int
    oldest: float | None  # when the oldest blob was stored (Unix time)
    newest: float | None
    hits: int = 0  # the server's lookups answered from the store, and not, as counted so far
    misses: int = 0


@dataclass(frozen=True)
class BlobEntry:
    sha256: str
    size: int
    used: float  # when a client was last served it (Unix time); a bucket: when it was stored


class Blob(Protocol):
    """An open blob: reading it is safe even if it is deleted meanwhile."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...

    @property
    def holds_resources(self) -> bool:
        """Must be closed; False for a small blob read whole at lookup."""
        ...

    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start`..`end` (inclusive), streamed. A blob not yet seen to hash right is
        checked as it goes: the last piece of a blob that does not is never sent, and the blob
        is dropped. Raises CorruptEntry (gitlab_pypi_proxy.storage.cached_file) for that, and
        OSError (the store's own errors among them) when its bytes cannot be read."""
        ...

    def reader(self) -> BinaryIO:
        """Its bytes from the start, unchecked, seekable (blocking reads: export, verify, a
        wheel's METADATA). Its reads raise OSError (the store's own errors among them)."""
        ...

    async def local_path(self) -> str | None:
        """Its path under the store's `files` directory once its bytes are known to hash right
        (hashed now if this process has not seen them do so), for a web server in front to
        send it (X-Accel-Redirect); None for a store without such files (a bucket), or when
        its bytes are corrupt (it is dropped, as on any read). Raises OSError when they cannot
        be read."""
        ...

    def close(self) -> None:
        """Releases what it holds without waiting for a disk or a network (an open local file's
        descriptor, the store's note that it is being served): called on the event loop."""
        ...


class BlobStore(Protocol):
    @property
    def keeping(self) -> bool:
        """May new blobs be put now? False for a while after the store failed to take one."""
        ...

    async def open(self, sha256: str, *, count: bool = True) -> Blob | None:
        """The blob, or None. `count`: a client's lookup (it counts in the hit ratio, it is
        noted for eviction's order and its bytes are checked on the way out); else the proxy's
        own read, of the blob as it is. Raises nothing: a blob that cannot be read or is found
        corrupt is None (a miss), and the store's failure is logged and counted."""
        ...

    def open_now(self, sha256: str) -> Blob | None:
        """`open(count=False)` for the command line (blocking). Raises OSError (the store's own
        errors among them) when the store cannot be asked."""
        ...

    async def redirect_url(self, sha256: str) -> str | None:
        """A short-lived URL the client may fetch the blob from itself, or None (not held, a
        store that has none, or one that cannot say now). Only after the caller's read check.
        Raises nothing."""
        ...

    def __contains__(self, sha256: object) -> bool:
        """Blocking."""
        ...

    def digests(self) -> Iterator[str]:
        """The sha256 of every blob held (blocking). Raises OSError (the store's own errors
        among them) when they cannot be listed; so do `entries` and `stats`."""
        ...

    def entries(self) -> Iterator[BlobEntry]:
        """Every blob held, with its size and last use (blocking)."""
        ...

    def stats(self) -> BlobStats:
        """Blocking."""
        ...

    def spool(self, sha256: str) -> Spool:
        """A new spool for a blob about to arrive (blocking). Raises OSError when there is no
        room for one."""
        ...

    async def reserve(self, spool: Spool, size: int | None) -> None:
        """The blob will be `size` bytes (as announced): take its room now, before its first
        byte goes to any client. Raises CacheUnwritable when it will not fit."""
        ...

    def put(self, spool: Spool) -> bool:
        """Take the verified spool's bytes as the blob of its sha256, unless one is there
        already (blocking). False when the store does not keep it (larger than it may hold).
        Raises OSError or sqlite3.Error when it cannot; the spool is then still to discard."""
        ...

    def discard(self, spool: Spool) -> None:
        """Close and remove a spool that was not put, or whose bytes the store has taken
        (blocking). Never raises: what it cannot remove is a leftover for `clean`."""
        ...

    def delete(self, sha256: str) -> None:
        """Blocking; nothing to delete is no error. Raises OSError (sqlite3.Error, the store's
        own errors) when it cannot."""
        ...

    def failed(self, exc: BaseException, what: str) -> CacheUnwritable:
        """Taking a blob failed with `exc` while `what`: stop keeping for a while, and the
        exception that says so (returned, for the caller to raise)."""
        ...

    def clean(self) -> tuple[int, int]:
        """Remove the spools that downloads killed midway left (blocking; at start). How many,
        and their bytes. Raises OSError when the spools' directory cannot be read; a spool it
        cannot remove stays for the next start."""
        ...

    def close(self) -> None:
        """Write what is pending (blocking). Raises nothing: what cannot be written is logged."""
        ...
