"""The processes of this `serve` (on this machine: in a cluster, this replica's) and their memory,
as /proc says, for the status page: the supervisor and its workers, each with its resident
set size (VmRSS), which is what an out-of-memory killer and a container's limit count.

The supervisor puts its pid in the environment its workers inherit (gitlab_pypi_proxy.supervisor);
its workers are the processes whose parent it is. With one worker, uvicorn serves in the
supervisor process itself. A process started otherwise (a test's app in-process) is alone.
Blocking: reads /proc; call it in a thread.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from gitlab_pypi_proxy.supervisor import PID_ENV

PROC = Path("/proc")


@dataclass(frozen=True)
class Process:
    pid: int
    role: str  # "supervisor" or "worker"
    rss: int | None  # bytes; None once it has ended
    this: bool = False  # the process answering


def resident(pid: int) -> int | None:
    """The resident set size of `pid`, in bytes (None: no such process)."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def children(parent: int) -> list[int]:
    """The pids whose parent is `parent`, in order."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended while listed
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(parent):
            found.append(int(entry.name))
    return sorted(found)


def serving() -> list[Process]:
    """The supervisor (if another process) and every worker, this one marked."""
    me = os.getpid()
    try:
        supervisor = int(os.environ.get(PID_ENV, ""))
    except ValueError:
        supervisor = me
    if supervisor == me:
        return [Process(me, "worker", resident(me), this=True)]
    workers = [Process(p, "worker", resident(p), p == me) for p in children(supervisor)]
    if not any(w.this for w in workers):  # not a child of that supervisor after all
        workers.append(Process(me, "worker", resident(me), this=True))
    return [Process(supervisor, "supervisor", resident(supervisor)), *workers]
