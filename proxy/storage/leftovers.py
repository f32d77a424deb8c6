"""What downloads leave in the file cache's `incoming/` and `locks/` while they run, and after a
process running them died (SIGKILL, a grace time run out): measured, and removed at start-up.

A download holds an flock on `locks/<sha256>` from before its partial file `incoming/<first 16
hex digits of the sha256>….part` exists until after it is kept or deleted. So a partial file whose
digest's lock nobody holds is an orphan, and so is a lock file nobody holds.
"""

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Orphans:
    """What was removed: partial files, their bytes, lock files."""

    parts: int = 0
    bytes: int = 0
    locks: int = 0


def partial_bytes(incoming: Path) -> int:
    """Bytes the partial files take now, running downloads' and orphans' alike (blocking)."""
    total = 0
    for entry in os.scandir(incoming):
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size
    return total


def remove_orphans(incoming: Path, locks: Path) -> Orphans:
    """Remove the partial files and lock files of downloads no process runs (blocking)."""
    parts = [entry for entry in os.scandir(incoming) if entry.is_file()]  # before the locks
    held, freed = set(), 0
    for entry in os.scandir(locks):
        try:
            fd = os.open(entry.path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.add(entry.name[:16])
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)  # while held, as a download's own unlock does
            freed += 1
        finally:
            os.close(fd)
    removed, size = 0, 0
    for entry in parts:
        if entry.name[:16] in held:
            continue
        with contextlib.suppress(FileNotFoundError):
            length = entry.stat().st_size
            os.unlink(entry.path)
            removed, size = removed + 1, size + length
    return Orphans(removed, size, freed)
