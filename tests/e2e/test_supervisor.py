"""`serve` with workers: once its checks pass, the process becomes a lean supervisor (the same
pid) of its workers, with no resource tracker beside them, and still removes its runtime
directory when stopped."""

import signal
from pathlib import Path

import psutil
import pytest

from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.waiting import wait_until


def _started(tmp_path: Path) -> tuple[ProxyProcess, psutil.Process, list[psutil.Process]]:
    config = write_config(tmp_path, "http://127.0.0.1:9", [])
    proxy = start_proxy(config, "--workers", "2")
    wait_until(
        lambda: proxy.log().count("Application startup complete") == 2, "two workers starting", 60
    )
    supervisor = psutil.Process(proxy.process.pid)
    return proxy, supervisor, supervisor.children()


def _runtime_directory(worker: psutil.Process) -> Path:
    return Path(worker.environ()["GITLAB_PYPI_PROXY_RUNTIME_DIR"])


def test_the_supervisor_holds_uvicorn_only_and_no_resource_tracker_runs(tmp_path: Path) -> None:
    proxy, supervisor, children = _started(tmp_path)
    try:
        commands = [child.cmdline() for child in children]
        assert len(children) == 2, commands
        assert all("spawn_main" in " ".join(c) for c in commands), commands
        assert "serve" in supervisor.cmdline()  # what `ps` shows: the command that started it
        # the checks' SQLite (the cache's stores) is gone from the supervisor, not from a worker
        assert not any("_sqlite3" in (m.path or "") for m in supervisor.memory_maps())
        assert any("_sqlite3" in (m.path or "") for m in children[0].memory_maps())
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
        proxy.process.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive
        assert not runtime.exists()
    finally:
        proxy.stop()
