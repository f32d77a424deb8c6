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
import time
from pathlib import Path

PART, NEW = ".part", ".new"
_NEW_GRACE = 600.0  # seconds after which a `.new` is surely a dead maker's


def partial_bytes(incoming: Path) -> int:
    """Bytes the spools take now, running downloads' and orphans' alike (blocking)."""
    total = 0
    for entry in os.scandir(incoming):
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size
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
