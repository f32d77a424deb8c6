"""`serve` with workers: once its checks pass, the process becomes a lean supervisor (the same
pid) of its workers, holding no server of its own; it replaces a worker that ends, replaces them
all one at a time on SIGHUP without the service dropping, stops when a worker cannot start, and
removes its runtime directory when stopped."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import psutil
import pytest

from gitlab_pypi_proxy.cli import CONFIG_ENV
from gitlab_pypi_proxy.demo.server import free_port
from gitlab_pypi_proxy.log_format import logging_config
from gitlab_pypi_proxy.supervisor import ENV, STARTUP_FAILURE
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.waiting import wait_until


def _started(
    tmp_path: Path, extra: str = ""
) -> tuple[ProxyProcess, psutil.Process, list[psutil.Process]]:
    config = write_config(tmp_path, "http://127.0.0.1:9", [], extra=extra)
    proxy = start_proxy(config, "--workers", "2")
    wait_until(
        lambda: proxy.log().count("Application startup complete") == 2, "two workers starting", 60
    )
    supervisor = psutil.Process(proxy.process.pid)
    return proxy, supervisor, supervisor.children()


def _runtime_directory(worker: psutil.Process) -> Path:
    return Path(worker.environ()["GITLAB_PYPI_PROXY_RUNTIME_DIR"])


def _libraries(process: psutil.Process) -> str:
    return " ".join(m.path or "" for m in process.memory_maps())


def test_the_supervisor_holds_no_server_and_its_workers_serve(tmp_path: Path) -> None:
    proxy, supervisor, children = _started(tmp_path)
    try:
        commands = [" ".join(child.cmdline()) for child in children]
        assert len(children) == 2, commands
        assert all("gitlab_pypi_proxy.worker_process" in c for c in commands), commands
        assert "serve" in supervisor.cmdline()  # what `ps` shows: the command that started it
        # no event loop, TLS or SQLite in the process that serves nothing: all in each worker
        for library in ("_ssl", "_sqlite3", "uvloop"):
            assert library not in _libraries(supervisor)
            assert all(library in _libraries(child) for child in children)
        assert "GITLAB_PYPI_PROXY_SUPERVISOR" not in children[0].environ()
    finally:
        proxy.stop()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_every_process_and_removes_the_runtime_directory(
    tmp_path: Path, stop: signal.Signals
) -> None:
    proxy, _, children = _started(tmp_path)
    try:
        runtime = _runtime_directory(children[0])
        assert runtime.is_dir()
        proxy.process.send_signal(stop)
        assert proxy.process.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive
        assert not runtime.exists()
    finally:
        proxy.stop()


def test_a_worker_that_does_not_stop_is_killed_once_its_grace_is_over(tmp_path: Path) -> None:
    proxy, _, children = _started(tmp_path, "[server]\ngraceful_shutdown = 1\n")
    try:
        children[0].suspend()  # a wedged worker: SIGTERM is not handled
        proxy.process.terminate()
        assert proxy.process.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive
        assert f"worker {children[0].pid} did not stop within 6 s: killed" in proxy.log()
    finally:
        proxy.stop()


def test_a_worker_that_ends_is_replaced(tmp_path: Path) -> None:
    proxy, supervisor, children = _started(tmp_path)
    try:
        children[0].kill()
        replaced = wait_until(
            lambda: len(now := supervisor.children()) == 2 and children[0] not in now and now,
            "a new worker",
            60,
        )
        assert children[1] in replaced
        wait_until(lambda: proxy.log().count("Application startup complete") == 3, "it serves", 60)
        assert f"worker {children[0].pid} ended" in proxy.log()
        assert all(httpx2.get(f"{proxy.url}/healthz").status_code == 200 for _ in range(4))
    finally:
        proxy.stop()


def _accept_queues(port: int) -> dict[int, int]:
    """The connections waiting to be accepted by each socket listening on `port`, by inode."""
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _, local, _, state, queue, *_, inode = line.split()[:10]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: listening
            queues[int(inode)] = int(queue.split(":")[1], 16)
    return queues


def _listening(worker: psutil.Process) -> set[int]:
    """The inodes of the sockets `worker` listens on."""
    return {
        os.stat(f"/proc/{worker.pid}/fd/{c.fd}").st_ino
        for c in worker.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }


def test_connections_are_spread_over_the_workers_whichever_runs_when_they_come(
    tmp_path: Path,
) -> None:
    # uv opens 15 connections at once and keeps them; from one shared socket, the worker that
    # ran at that moment took 14 and served the whole resolve alone. Here one worker is paused
    # while 32 connections come, and the other takes every one it is handed.
    proxy, _, children = _started(tmp_path)
    port = int(proxy.url.rsplit(":", 1)[1])
    paused, running = children
    clients: list[socket.socket] = []
    try:
        paused.suspend()
        try:
            clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
            mine = _listening(running)
            wait_until(
                lambda: not any(n for inode, n in _accept_queues(port).items() if inode in mine),
                "the running worker accepting what its socket holds",
                30,
            )
        finally:
            paused.resume()

        def accepted() -> list[int] | None:
            counts = [
                sum(
                    c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                    for c in child.net_connections("tcp")
                )
                for child in children
            ]
            return counts if sum(counts) == len(clients) else None

        counts = wait_until(accepted, "the workers accepting every connection", 30)
        assert min(counts) >= 4, counts  # an even spread; fewer has a chance below 1 in 10^5
    finally:
        for client in clients:
            client.close()
        proxy.stop()


def test_sighup_replaces_every_worker_one_at_a_time_and_the_service_never_drops(
    tmp_path: Path,
) -> None:
    proxy, supervisor, children = _started(tmp_path)
    try:
        proxy.process.send_signal(signal.SIGHUP)
        answers = []

        def replaced() -> bool:
            # a new connection each time: a kept-alive one ends with the worker that held it
            answers.append(httpx2.get(f"{proxy.url}/healthz").status_code)
            now = supervisor.children()
            return len(now) == 2 and not set(now) & set(children)

        wait_until(replaced, "both workers replaced", 120)
        assert set(answers) == {200}
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive
        assert proxy.process.poll() is None
    finally:
        proxy.stop()


def test_a_sighup_during_a_restart_replaces_every_worker_once_more(tmp_path: Path) -> None:
    # the operator changed something again while the first restart ran: a worker started
    # before that change must not be the one left serving
    proxy, supervisor, children = _started(tmp_path)
    try:
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(lambda: len(supervisor.children()) == 3, "a replacement starting", 60)
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: proxy.log().count("Application startup complete") == 6,
            "each worker replaced twice",
            120,
        )
        now = wait_until(
            lambda: len(found := supervisor.children()) == 2 and found, "two workers left", 60
        )
        assert not set(now) & set(children)
        assert all(httpx2.get(f"{proxy.url}/healthz").status_code == 200 for _ in range(4))
    finally:
        proxy.stop()


def _supervisor(tmp_path: Path, port: int) -> subprocess.CompletedProcess[str]:
    """The supervisor alone, two workers, with no configuration for them to read."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    settings = {
        "host": "127.0.0.1",
        "port": port,
        "workers": 2,
        "log_config": logging_config("info", "text"),
    }
    env = {
        **os.environ,
        ENV: json.dumps({"runtime": str(runtime), "uvicorn": settings}),
        CONFIG_ENV: str(tmp_path / "missing.toml"),
    }
    code = "from gitlab_pypi_proxy.supervisor import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert not runtime.exists()
    return done


def test_a_worker_that_cannot_start_stops_the_proxy(tmp_path: Path) -> None:
    done = _supervisor(tmp_path, free_port())
    assert done.returncode == STARTUP_FAILURE, done.stderr
    assert "missing.toml: file not found" in done.stderr  # the worker's reason, in one line
    assert "could not start (status 3): stopping the proxy" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_taken_stops_the_proxy_with_a_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _supervisor(tmp_path, taken.getsockname()[1])
    assert done.returncode == STARTUP_FAILURE, done.stderr
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_another_proxy_serves_is_not_shared_with_it(tmp_path: Path) -> None:
    # the workers' sockets share their port with each other, and with no one else
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    proxy, _, _ = _started(first)
    try:
        done = _supervisor(second, int(proxy.url.rsplit(":", 1)[1]))
        assert done.returncode == STARTUP_FAILURE, done.stderr
        assert "cannot listen on 127.0.0.1" in done.stderr
        assert httpx2.get(f"{proxy.url}/healthz").status_code == 200
    finally:
        proxy.stop()
