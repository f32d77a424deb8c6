"""Fast by default: with no `workers` in the configuration, `serve` runs one worker per usable
core (within memory), and every one of them answers."""

from pathlib import Path

from gitlab_pypi_proxy.workers import auto_workers
from tests.proxy_process import start_proxy, write_config
from tests.waiting import wait_until


def test_serve_starts_a_worker_per_usable_core_by_default(tmp_path: Path) -> None:
    expected = auto_workers()
    config = write_config(tmp_path, "http://127.0.0.1:9", [])
    proxy = start_proxy(config, config_workers=True)
    try:
        wait_until(
            lambda: proxy.log().count("Application startup complete") == expected,
            f"{expected} workers starting",
            60,
        )
        assert proxy.log().count("Started server process") == expected
    finally:
        proxy.stop()
