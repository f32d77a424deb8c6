"""What downloads leave in the file cache's `incoming/` while they run, and after a process
running them died (SIGKILL, a grace time run out): measured, and removed at start-up.

A download's spool is made as `incoming/<first 16 hex digits of the sha256>….new`, flocked, then
renamed to `….part`, and its writer holds that flock until the spool is put into the cache or
removed. So a `.part` nobody holds is an orphan; a `.new` is one only if its maker died between
making and naming it, which leaves it old.
"""

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from gitlab_pypi_proxy.storage.blobs import Spool

PART, NEW = ".part", ".new"
_NEW_GRACE = 600.0  # seconds after which a `.new` is surely a dead maker's


def new_spool(incoming: Path, sha256: str) -> Spool:
    """A new spool in `incoming` (blocking). It is made under a name clean-up ignores and
    flocked before it is named `.part`: a `.part` nobody holds is a leftover."""
    fd, new = tempfile.mkstemp(dir=incoming, prefix=sha256[:16], suffix=NEW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = new.removesuffix(NEW) + PART
        os.rename(new, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(new)
        raise
    # Unbuffered: `written` must only count bytes that followers can already read.
    return Spool(sha256, path, os.fdopen(fd, "wb", buffering=0))


def discard_spool(spool: Spool) -> None:
    """Close and remove a spool (blocking); never raises: what stays is a leftover."""
    with contextlib.suppress(OSError):  # after the fsync: nothing is left to lose
        spool.handle.close()
    with contextlib.suppress(OSError):  # gone (put), or a read-only disk: a leftover then
        os.unlink(spool.path)


def partial_bytes(incoming: Path, claimed: Mapping[str, int] | None = None) -> int:
    """Bytes the spools take, running downloads' and orphans' alike (blocking): each file's
    size now, or what `claimed` says it will take (by file name: a running download's whole
    size) when that is more. Each file is read once, so one growing or preallocated while it
    is counted is never counted twice."""
    claimed = claimed or {}
    total = 0
    for entry in os.scandir(incoming):
        with contextlib.suppress(FileNotFoundError):
            total += max(entry.stat().st_size, claimed.get(entry.name, 0))
    return total


def remove_orphans(incoming: Path) -> tuple[int, int]:
    """Remove the spools of downloads no process runs (blocking): how many, and their bytes."""
    removed, size = 0, 0
    now = time.time()
    for entry in os.scandir(incoming):
        if not entry.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            length = entry.stat().st_size
            if entry.name.endswith(NEW):
                orphan = now - entry.stat().st_mtime > _NEW_GRACE
            else:
                orphan = _unheld(entry.path)
            if orphan:
                os.unlink(entry.path)
                removed, size = removed + 1, size + length
    return removed, size


def _unheld(path: str) -> bool:
    """Does no process hold an flock on the file at `path`?"""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
