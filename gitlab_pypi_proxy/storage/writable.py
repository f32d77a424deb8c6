"""Whether the cache directory takes writes now: the one place a full or read-only disk is known.

Every cache reports a failed write here (`failed`), then carries on without keeping: cached
entries are still read, new ones are served but not stored. For a while after a failure, files
are not even tried (`keeping` is false), instead of failing again on every request; one warning
is logged per outage. What health, readiness, the status page and `/metrics` report (`state`)
also asks the file system itself, so every worker says the same whether or not it has tried to
write (statvfs, and making an empty file).
"""

import errno
import logging
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import diskcache

log = logging.getLogger("proxy.cache")

# What a write into the cache raises when the disk is full, read-only or failing.
WRITE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)

PAUSE_SECONDS = 60.0  # after a failed write, how long files are served without trying to keep them
_LOW_SPACE = 2**20  # fewer free bytes than this: the cache directory counts as full


@dataclass(frozen=True)
class CacheState:
    state: str  # "writable", "full", "read-only" or "failing"
    reason: str  # what the last failed write said, or what the file system says
    free_bytes: int | None

    @property
    def writable(self) -> bool:
        return self.state == "writable"

    def describe(self) -> str:
        if self.writable:
            return "writable"
        return f"cache directory {self.state} ({self.reason}): serving without keeping"

    def as_json(self) -> dict[str, object]:
        return {
            "writable": self.writable,
            "state": self.state,
            "reason": self.reason or None,
            "free_bytes": self.free_bytes,
        }


def _kind(exc: BaseException) -> str:
    code, text = getattr(exc, "errno", None), str(exc).lower()
    if code == errno.EROFS or "readonly" in text:  # SQLite: "attempt to write a readonly database"
        return "read-only"
    if code in (errno.ENOSPC, errno.EDQUOT) or "full" in text:  # "database or disk is full"
        return "full"
    return "failing"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class CacheWrites:
    """The write health of one cache directory, as this process has seen it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._until = 0.0  # monotonic: no new files are kept before then
        self._kind = ""
        self._reason = ""

    @property
    def keeping(self) -> bool:
        """False for a while after a write failed: serve files without trying to keep them."""
        return time.monotonic() >= self._until

    def failed(self, exc: BaseException, what: str) -> None:
        """A write into the cache failed while `what` ("keeping a file"): the caller goes on
        without it."""
        if self.keeping:  # the first failure since the cache last took a write
            log.warning(
                "cache directory cannot be written (%s, while %s): "
                "serving files without keeping them for %ds",
                _reason(exc),
                what,
                PAUSE_SECONDS,
            )
        self._until = time.monotonic() + PAUSE_SECONDS
        self._kind, self._reason = _kind(exc), _reason(exc)

    def state(self) -> CacheState:
        """Blocking (statvfs, and an empty file made and removed): call in a thread."""
        try:
            disk = os.statvfs(self.directory)
            free = disk.f_bavail * disk.f_frsize
            if disk.f_flag & os.ST_RDONLY:
                return CacheState("read-only", "the file system is mounted read-only", free)
            # A file system turned read-only after an error may still say "rw" in its flags.
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-"):
                pass
        except OSError as exc:
            return CacheState(_kind(exc), _reason(exc), None)
        if not self.keeping:
            return CacheState(self._kind, self._reason, free)
        if free < _LOW_SPACE:
            return CacheState("full", f"{free} bytes free", free)
        return CacheState("writable", "", free)


_BY_DIRECTORY: dict[Path, CacheWrites] = {}


def writes_for(directory: Path) -> CacheWrites:
    """The one CacheWrites of `directory` in this process, shared by all its caches."""
    key = Path(os.path.abspath(directory))
    found = _BY_DIRECTORY.get(key)
    if found is None:
        found = _BY_DIRECTORY[key] = CacheWrites(key)
    return found
