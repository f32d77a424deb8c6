"""A worker of `serve` started by the supervisor (gitlab_pypi_proxy.supervisor): uvicorn serving
the proxy on the listening socket it inherited, telling the supervisor once it serves by writing
one byte to the pipe it inherited for that. Should the supervisor die without stopping it (SIGKILL,
an out-of-memory kill), the kernel sends it SIGTERM (Linux's parent-death signal): no worker is
left serving without its supervisor."""

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import sys

import uvicorn

from gitlab_pypi_proxy.config import ConfigError
from gitlab_pypi_proxy.supervisor import APP, PID_ENV, STARTUP_FAILURE, WORKER_ENV


class _Server(uvicorn.Server):
    """uvicorn's server, telling the supervisor once it has started."""

    def __init__(self, config: uvicorn.Config, ready: int) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            os.write(self._ready, b"1")
            os.close(self._ready)


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _end_with(supervisor: int) -> None:
    """SIGTERM to this process when `supervisor` (its parent) ends; now if it has already."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's stop is the only one
        return
    if os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    _end_with(int(os.environ[PID_ENV]))
    settings = json.loads(os.environ.pop(WORKER_ENV))
    listener = socket.socket(fileno=settings["socket"])
    config = uvicorn.Config(APP, factory=True, **settings["uvicorn"])
    try:
        _Server(config, settings["ready"]).run(sockets=[listener])
    except ConfigError as exc:  # changed or gone since `serve` checked it
        logging.getLogger("proxy.worker").error("cannot start: %s", exc)
        sys.exit(STARTUP_FAILURE)
