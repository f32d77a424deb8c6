"""File descriptors, the bound every connection, open file and database counts against: the soft
limit raised to the hard one at start, and running out noticed, logged once and shown on
`/readyz` while it lasts.

Many systems start a process with a soft RLIMIT_NOFILE of 1024 under a far higher hard limit;
raising the soft one needs no privilege, so `serve` does it before its workers start. Running out
is silent otherwise: uvloop accepts and closes each connection it has no descriptor for, logging
nothing (plain asyncio logs a traceback a second). Here each worker probes every PROBE_SECONDS
(one dup and close), logs one warning when it runs out and one when it recovers, answers
`/readyz` 503 meanwhile and sets gitlab_pypi_proxy_descriptors_exhausted; asyncio's own report
of a failed accept is folded into that state."""

import asyncio
import errno
import logging
import os
import resource
import time
from typing import Any

from gitlab_pypi_proxy import metrics

PROBE_SECONDS = 1.0
_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message for EMFILE

log = logging.getLogger("proxy.descriptors")


def raise_soft_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit: (before, after). A
    system that refuses (a hard limit it will not grant, as macOS may) keeps the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def _limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class DescriptorWatch:
    """Whether this process is out of descriptors, probed every PROBE_SECONDS once started."""

    def __init__(self) -> None:
        self.exhausted_since: float | None = None  # monotonic
        self.reason = ""
        self._spare: int | None = None  # the descriptor the probe duplicates
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None  # the loop's exception handler before this one

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stop()
        self._spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._loop, self._previous = loop, loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
        self._schedule()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            self.probe()
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def _schedule(self) -> None:
        if self._loop is not None:
            self._timer = self._loop.call_later(PROBE_SECONDS, self._tick)

    def _tick(self) -> None:
        self.probe()
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.set_exception_handler(self._previous)
        self._loop = self._previous = None
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def probe(self) -> None:
        """Take one descriptor and give it back: whether that is possible now."""
        if self._spare is None:
            return
        try:
            os.close(os.dup(self._spare))
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                self._ran_out(
                    f"all {_limit()} file descriptors this process may open (RLIMIT_NOFILE) are "
                    "in use"
                )
            elif exc.errno == errno.ENFILE:
                self._ran_out("the system's table of open files is full (fs.file-max)")
            return
        self._recovered()

    def _ran_out(self, reason: str) -> None:
        if self.exhausted_since is not None:
            return
        self.exhausted_since, self.reason = time.monotonic(), reason
        metrics.DESCRIPTORS_EXHAUSTED.set(1)
        log.warning(
            "out of file descriptors: %s; new connections are dropped until some close", reason
        )

    def _recovered(self) -> None:
        if self.exhausted_since is None:
            return
        lasted = time.monotonic() - self.exhausted_since
        self.exhausted_since, self.reason = None, ""
        metrics.DESCRIPTORS_EXHAUSTED.set(0)
        log.warning("file descriptors available again, after %.0f s without", lasted)

    def exhaustion(self) -> str | None:
        """What `/readyz` says while this process is out of descriptors; None otherwise."""
        if self.exhausted_since is None:
            return None
        return f"out of file descriptors: {self.reason}; new connections are dropped"

    def as_json(self) -> dict[str, object]:
        return {"exhausted": self.exhausted_since is not None, "limit": _limit()}


WATCH = DescriptorWatch()  # the process's descriptor table is one: so is its watch
