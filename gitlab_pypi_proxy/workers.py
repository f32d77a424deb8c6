"""How many worker processes `[server] workers = "auto"` (the default) runs: one per usable core
(`os.sched_getaffinity`, within a container's CPU quota), no more than memory allows for a worker
(~50 MiB at rest, up to ~80 MiB while it takes a large upload) with room to spare, and no more
than MAX_AUTO."""

import math
import os
from pathlib import Path

MAX_AUTO = 8  # past this, the workers mostly wait on each other's SQLite writes
MAX_WORKERS = 64  # the most `[server] workers` may ask for: 5 GiB of workers, all contending
MEMORY_PER_WORKER = 256 * 2**20  # a worker at its peak, and room for what it streams and spools
_CGROUP = Path("/sys/fs/cgroup")


def _cpu_quota(cgroup: Path) -> float | None:
    """The CPUs a cgroup may use (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), None if unlimited."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit():
        return None
    return int(quota) / int(period) if int(period) else None


def _memory_limit(cgroup: Path) -> int | None:
    """The bytes a cgroup may use (v2 `memory.max`, v1 `memory.limit_in_bytes`), None if
    unlimited, or the machine's memory where that is less."""
    limits = []
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        limits.append(pages * size)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def auto_workers(cgroup: Path = _CGROUP) -> int:
    """The number of workers "auto" means on this machine, at least 1."""
    count = len(os.sched_getaffinity(0))
    quota = _cpu_quota(cgroup)
    if quota is not None:
        count = min(count, math.ceil(quota))
    memory = _memory_limit(cgroup)
    if memory is not None:
        count = min(count, memory // (2 * MEMORY_PER_WORKER))
    return max(1, min(count, MAX_AUTO))


def workers(setting: int | str) -> int:
    """A `[server] workers` value ("auto" or a number) as a number of processes."""
    return auto_workers() if setting == "auto" else int(setting)
