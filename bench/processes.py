"""Start the servers under test as process groups, wait for them (bounded), always stop them, and
read the resident memory of a process and its descendants from /proc."""

import os
import signal
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx2


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class Processes:
    """Every process the harness started; `stop_all` ends each group, even after a failure."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[Running] = []

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Running:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # its own process group: stopped whole, workers too
            )
        running = Running(name, process, log)
        self.running.append(running)
        return running

    def wait_http(self, running: Running, url: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                tail = running.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{running.name} exited ({running.process.returncode}):\n{tail}")
            with suppress(httpx2.TransportError):
                if httpx2.get(url, timeout=2).status_code < 500:
                    return
            time.sleep(0.1)  # polling a condition with a deadline
        raise RuntimeError(f"{running.name} did not answer {url} in {seconds:.0f}s")

    def stop(self, running: Running) -> None:
        if running.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGTERM)
            try:
                running.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(running.pid, signal.SIGKILL)
                running.process.wait(timeout=10)
        with suppress(ProcessLookupError):  # a worker that outlived its parent
            os.killpg(running.pid, signal.SIGKILL)
        if running in self.running:
            self.running.remove(running)

    def stop_all(self) -> None:
        for running in reversed(list(self.running)):
            self.stop(running)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_pids(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += tree.get(current, [])
    return found


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum over the process and its descendants, the largest single one), in bytes."""
    sizes = [rss_bytes(p) for p in tree_pids(pid)]
    return sum(sizes), max(sizes, default=0)
