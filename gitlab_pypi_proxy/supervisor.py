"""The process `serve` becomes once its checks pass: the supervisor of its workers, holding
nothing else.

`serve` checks the configuration, the cache and the shared stores with the whole proxy imported,
then replaces itself with this module (`exec`: the same pid, stdio and signals, a fresh memory
image). What it needs comes in one environment variable, read and removed before any worker
starts. With one worker, uvicorn serves in this process. With more, this module supervises them
itself rather than through uvicorn's supervisor (`uvicorn.run(workers=N)`): that one imports
uvicorn, asyncio and ssl into a process that serves no request (~30 MiB resident, against ~17
here: a fifth of an idle proxy with two workers) and spawns through multiprocessing. So keep
this module's imports light: no asyncio, uvicorn, gitlab_pypi_proxy.config, storage,
prometheus_client or diskcache (tests/unit/test_worker_imports.py).

What it does is what uvicorn's does, with a listening socket per worker: it binds them and starts
each worker as an interpreter of its own (gitlab_pypi_proxy.worker_process) that inherits its
socket; it starts another when one ends; on SIGHUP it replaces them one at a time, each replacement
serving before the worker it replaces is stopped (a restart that does not drop the service, e.g. for
new advisories), and all of them once more when another SIGHUP came while it did; on SIGTERM or
SIGINT it stops them all (each finishes its requests first: `[server] graceful_shutdown`; one still
there STOP_MARGIN seconds after that is killed) and ends. A worker that ends before it serves stops
the proxy with uvicorn's STARTUP_FAILURE status: `serve`'s checks passed, so what broke it (the
configuration gone, the cache unreadable) would break every replacement too; a process manager
restarting the proxy says so louder than workers failing in a loop. A worker tells it that it serves
by writing one byte to a pipe it inherits.

A socket per worker (SO_REUSEPORT, on Linux) rather than one they share: the kernel spreads new
connections over the sockets evenly as they come. From one shared socket, whichever worker was
running when connections came took them (it looks at the socket again before the other has woken):
uv opens 15 at once and keeps them, and one worker got 14, then served the whole resolve on its one
core while the other idled (a cold resolve of the real-index set took up to 10 s where it takes 6).
The supervisor holds every socket, so a replacement worker inherits its predecessor's, and
connections waiting in it are served once the replacement is. Before binding the group, the address
is bound once alone: a port another process listens on is refused as it always was, not shared with
it."""

import json
import logging
import logging.config
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from gitlab_pypi_proxy.internals.spawning import interpreter_flags

ENV = "GITLAB_PYPI_PROXY_SUPERVISOR"
PID_ENV = "GITLAB_PYPI_PROXY_SUPERVISOR_PID"  # its workers find it here (the status page)
APP = "gitlab_pypi_proxy.cli:app_factory"  # what each worker's uvicorn serves
WORKER_ENV = "GITLAB_PYPI_PROXY_WORKER"  # a worker's settings, read and removed as it starts
STOPS = (signal.SIGTERM, signal.SIGINT)  # what ends `serve`; the runtime directory goes first
STARTUP_FAILURE = 3  # a worker's status when it could not start (uvicorn.config.STARTUP_FAILURE)
READY_WITHIN = 120.0  # seconds a replacement has to serve before a SIGHUP restart gives up
STOP_MARGIN = 5.0  # seconds past `[server] graceful_shutdown` before a stopped worker is killed
_BALANCED = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")  # Linux's spreads
_ROOT = str(Path(__file__).resolve().parent.parent)  # this very proxy package, wherever it is

log = logging.getLogger("proxy.supervisor")


def become(runtime: Path, uvicorn_settings: dict[str, Any]) -> NoReturn:
    """Replace this process with the supervisor, which serves with `uvicorn_settings` (uvicorn's
    run() arguments, `workers` among them) and removes `runtime` (gitlab_pypi_proxy.runtime_dir)
    when it ends. The stop signals are blocked across the exec (a blocked signal stays pending
    in the new image) until its handlers are in place."""
    os.environ[ENV] = json.dumps({"runtime": str(runtime), "uvicorn": uvicorn_settings})
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    # The arguments after the code are only what `ps` shows: the command that started it.
    os.execv(sys.executable, [*_interpreter(__name__), *sys.argv[1:]])


def _interpreter(module: str) -> list[str]:
    """The command running `main()` of `module` in a new interpreter, with this one's flags."""
    code = f"import sys; sys.path.insert(0, {_ROOT!r}); from {module} import main; main()"
    return [sys.executable, *interpreter_flags(), "-c", code]


def remove_on_stop(runtime: Path) -> None:
    """Until uvicorn installs its own handlers (and again once a single worker restores these
    and raises the signal that stopped it), a stop signal removes `runtime` before the process
    ends the way the signal says."""

    def remove_and_die(signum: int, frame: object) -> None:
        shutil.rmtree(runtime, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for stop in STOPS:
        signal.signal(stop, remove_and_die)


def main() -> None:
    settings = json.loads(os.environ.pop(ENV))
    os.environ[PID_ENV] = str(os.getpid())  # the workers inherit it
    runtime = Path(settings["runtime"])
    uvicorn_settings: dict[str, Any] = settings["uvicorn"]
    workers = uvicorn_settings.pop("workers", 1)
    try:
        if workers > 1:
            status = Supervisor(uvicorn_settings, workers).run()
            if status:
                sys.exit(status)
            return
        remove_on_stop(runtime)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        import uvicorn

        uvicorn.run(APP, factory=True, **uvicorn_settings)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


# --- the supervisor -------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    ready: int | None  # the read end of the pipe it writes one byte to once it serves
    serving: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.ready is not None:
            os.close(self.ready)
            self.ready = None


@dataclass
class Supervisor:
    settings: dict[str, Any]  # uvicorn's, for the workers
    count: int
    workers: list[Worker] = field(default_factory=list)
    _signals: list[int] = field(default_factory=list)
    _wakeup: int = -1  # the read end of the signals' wakeup pipe
    _listeners: list[socket.socket] = field(default_factory=list)  # one per worker, by index

    def run(self) -> int:
        """Serve until stopped; the exit status."""
        logging.config.dictConfig(self.settings["log_config"])
        wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write)
        for number in (*STOPS, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(number, lambda number, frame: self._signals.append(number))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # pending ones are handled now
        try:
            self._listeners = _bind(self.settings["host"], self.settings["port"], self.count)
        except OSError as exc:
            log.error(
                "cannot listen on %s:%s: %s", self.settings["host"], self.settings["port"], exc
            )
            return STARTUP_FAILURE
        address = _address(self._listeners[0])
        log.info("supervisor %d: %d workers on %s", os.getpid(), self.count, address)
        self._wakeup = wakeup_read
        try:
            self.workers = [self._start(slot) for slot in range(self.count)]
            return self._supervise()
        finally:
            self._stop_all()
            for listener in self._listeners:
                listener.close()
            log.info("supervisor %d: stopped", os.getpid())

    def _supervise(self) -> int:
        while True:
            for number in self._taken():
                if number in STOPS:
                    log.info("%s: stopping the workers", signal.Signals(number).name)
                    return 0
                if number == signal.SIGHUP and not self._restart_all():
                    return 0  # a stop came meanwhile
            for index, worker in enumerate(self.workers):
                status = worker.process.poll()
                if status is None:
                    continue
                worker.close()
                if not worker.serving:
                    log.error(
                        "worker %d could not start (status %d): stopping the proxy",
                        worker.pid,
                        status,
                    )
                    self.workers.pop(index)
                    return STARTUP_FAILURE
                log.warning("worker %d ended (status %d): starting another", worker.pid, status)
                self.workers[index] = self._start(index)
            self._wait(self.workers, None)

    def _taken(self) -> list[int]:
        taken, self._signals[:] = list(self._signals), []
        return taken

    def _wait(self, workers: list[Worker], deadline: float | None) -> None:
        """Until a signal arrives, a worker says it serves, or `deadline`; a worker's end comes
        as SIGCHLD."""
        pending = {w.ready: w for w in workers if w.ready is not None and not w.serving}
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._signals:
            return
        readable, _, _ = select.select([self._wakeup, *pending], [], [], timeout)
        for fd in readable:
            if fd == self._wakeup:
                while _drained(fd):
                    pass
            else:  # a byte: it serves; none: it ended before (that comes as SIGCHLD too)
                pending[fd].serving = bool(os.read(fd, 1))
                pending[fd].close()

    def _restart_all(self) -> bool:
        """SIGHUP: each worker replaced by a new one once that serves; all of them again when
        another SIGHUP came meanwhile (a replacement started before it may run what it changed).
        False when a stop signal came meanwhile (the workers are then stopped by the caller)."""
        again = True
        while again:
            log.info("SIGHUP: replacing the workers one at a time")
            again = False
            for index, old in enumerate(list(self.workers)):
                new = self._start(index)
                deadline = time.monotonic() + READY_WITHIN
                while (
                    not new.serving and new.process.poll() is None and time.monotonic() < deadline
                ):
                    if any(n in STOPS for n in self._signals):
                        self.workers.append(new)  # stopped with the rest
                        return False
                    self._wait([new], deadline)
                    again = again or signal.SIGHUP in self._signals
                    self._signals[:] = [n for n in self._signals if n in STOPS]
                if not new.serving:
                    kept = (new.pid, old.pid)
                    log.error("worker %d did not start serving: keeping worker %d", *kept)
                    self._terminate(new)
                    return True
                self._terminate(old)
                self.workers[index] = new
            if again:
                log.info("SIGHUP came during the restart: once more, for what it changed")
        return True

    def _start(self, slot: int) -> Worker:
        """The worker of `slot` (its index in `workers`), serving that slot's socket."""
        listener = self._listeners[slot % len(self._listeners)]
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        settings = {
            "uvicorn": self.settings,
            "socket": listener.fileno(),
            "ready": ready_write,
        }
        process = subprocess.Popen(
            [*_interpreter("gitlab_pypi_proxy.worker_process"), "worker"],
            pass_fds=(listener.fileno(), ready_write),
            env={**os.environ, WORKER_ENV: json.dumps(settings)},
        )
        os.close(ready_write)
        return Worker(process, ready_read)

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in self.workers:
            _ended(worker, self._grace())
        self.workers = []

    def _grace(self) -> float:
        """How long a stopped worker may take to finish its requests, and a margin."""
        return float(self.settings.get("timeout_graceful_shutdown") or 30) + STOP_MARGIN

    def _terminate(self, worker: Worker) -> None:
        worker.process.terminate()
        _ended(worker, self._grace())


def _ended(worker: Worker, within: float) -> None:
    """Wait for a stopped worker to end; killed if it has not `within` seconds later (its
    event loop wedged: no graceful end will come)."""
    try:
        worker.process.wait(within)
    except subprocess.TimeoutExpired:
        log.error("worker %d did not stop within %g s: killed", worker.pid, within)
        worker.process.kill()
        worker.process.wait()
    worker.close()


def _drained(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _bind(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address, spreading connections between them (one shared
    socket where SO_REUSEPORT does not balance: not Linux). Raises OSError when the address is
    taken, by another process's group of sockets too."""
    alone = _socket(host, port, share=False)  # refused if anyone listens there
    if count == 1 or not _BALANCED:
        return [alone]
    port = alone.getsockname()[1]  # the one the system chose, for port 0
    alone.close()
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listeners.append(_socket(host, port, share=True))
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _socket(host: str, port: int, share: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    return listener


def _address(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
