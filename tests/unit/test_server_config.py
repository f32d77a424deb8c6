"""The [server] keys: the reverse proxy in front, the path prefix, shutdown, log format."""

import os
import re
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import ConfigError, load
from gitlab_pypi_proxy.workers import MAX_AUTO, MEMORY_PER_WORKER, auto_workers, workers


def _config(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(f"[server]\n{server}\n")
    return path


def test_server_keys(tmp_path: Path) -> None:
    config = load(
        _config(
            tmp_path,
            'base_path = "/pypi/"\ntrusted_proxies = ["10.0.0.0/8", "127.0.0.1"]\n'
            'graceful_shutdown = 5\nlog_format = "json"',
        )
    )
    assert config.server.base_path == "/pypi"
    assert config.server.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert config.server.graceful_shutdown == 5.0
    assert config.server.log_format == "json"
    assert load(_config(tmp_path, "")).server.base_path == ""


def test_header_timeout_defaults_to_30_seconds_and_takes_fractions(tmp_path: Path) -> None:
    assert load(_config(tmp_path, "")).server.header_timeout == 30.0
    assert load(_config(tmp_path, "header_timeout = 2.5")).server.header_timeout == 2.5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('trusted_proxies = ["proxy.local"]', "server.trusted_proxies: not an address"),
        ('base_path = "/a b"', "server.base_path: expected a path"),
        ('log_format = "xml"', "server.log_format: expected text or json"),
        ("graceful_shutdown = 0", "server.graceful_shutdown: must be positive"),
    ],
)
def test_bad_server_keys(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_config(tmp_path, line))


def test_workers_default_to_auto_and_take_a_number(tmp_path: Path) -> None:
    assert load(_config(tmp_path, "")).server.workers == "auto"
    assert load(_config(tmp_path, 'workers = "auto"')).server.workers == "auto"
    assert load(_config(tmp_path, "workers = 3")).server.workers == 3
    for line, message in [
        ("workers = 0", "server.workers: must be at least 1"),
        ("workers = 65", "server.workers: must be at most 64"),
        ('workers = "many"', "server.workers: expected \"auto\" or a number, got 'many'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load(_config(tmp_path, line))


def _cgroup(tmp_path: Path, cpu: str | None, memory: str | None) -> Path:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir(exist_ok=True)
    if cpu is not None:
        (cgroup / "cpu.max").write_text(cpu + "\n")
    if memory is not None:
        (cgroup / "memory.max").write_text(memory + "\n")
    return cgroup


def test_auto_workers_follow_cores_cpu_quota_and_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    gib = 2**30
    assert auto_workers(_cgroup(tmp_path, "max 100000", "max")) == min(
        MAX_AUTO,
        os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (2 * MEMORY_PER_WORKER),
    )
    assert auto_workers(_cgroup(tmp_path, "150000 100000", "max")) == 2  # 1.5 CPUs: 2 workers
    assert auto_workers(_cgroup(tmp_path, "max 100000", str(gib))) == 2  # 1 GiB: two
    assert auto_workers(_cgroup(tmp_path, "max 100000", str(100 * 2**20))) == 1  # at least one
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert auto_workers(_cgroup(tmp_path, "max 100000", "max")) == min(3, MAX_AUTO)
    assert workers(5) == 5


def test_accel_redirect_is_an_internal_locations_prefix_for_the_local_store(
    tmp_path: Path,
) -> None:
    assert load(_config(tmp_path, "")).server.accel_redirect == ""
    config = load(_config(tmp_path, 'accel_redirect = "/_cached/files/"'))
    assert config.server.accel_redirect == "/_cached/files/"
    for bad in ("_cached/", "/_cached", "/", "//", "/a//b/", "/../", "/a/./", "/a b/", "/é/"):
        with pytest.raises(ConfigError, match=r"server\.accel_redirect: expected an internal"):
            load(_config(tmp_path, f'accel_redirect = "{bad}"'))
    bucket = '[storage]\nbackend = "s3"\nbucket = "pypi-files"\naccess_key_id = "k"\n'
    bucket += 'secret_access_key = "s"\n'
    path = _config(tmp_path, 'accel_redirect = "/_cached/"')
    path.write_text(path.read_text() + bucket)
    with pytest.raises(ConfigError, match=r"server\.accel_redirect: only with \[storage\] backend"):
        load(path)
