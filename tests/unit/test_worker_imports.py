"""What every process of `serve` loads at start: none of the heavy libraries only some
configurations or some pages need, and a supervisor without the server it does not run."""

import json
import subprocess
import sys

import pytest

PROBE = (
    "import json, sys, gitlab_pypi_proxy.cli, gitlab_pypi_proxy.http.app; "
    "print(json.dumps(sorted(sys.modules)))"
)


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "bs4",  # 8 MiB: the root index is parsed with the standard library's tokenizer
        "pypi_attestations",  # with sigstore, pydantic and cryptography ~40 MiB: first provenance
        "sigstore",
        "pydantic",
        "obstore",  # [storage] backend = "s3" only
        "redis",  # [cluster] only
    ],
)
def test_serve_does_not_load_at_start(loaded: set[str], module: str) -> None:
    assert module not in loaded


@pytest.mark.parametrize(
    "module",
    [
        # what registers named semaphores or shared memory with multiprocessing's resource
        # tracker, an interpreter of its own (~13 MiB) that no process of `serve` starts
        "multiprocessing.synchronize",
        "multiprocessing.shared_memory",
        "multiprocessing.queues",
        "multiprocessing.pool",
        "multiprocessing.managers",
        "concurrent.futures.process",
    ],
)
def test_no_process_of_serve_registers_with_a_resource_tracker(
    loaded: set[str], module: str
) -> None:
    assert module not in loaded


def test_the_supervisor_loads_no_part_of_the_proxy_it_does_not_run() -> None:
    """It lives as long as the proxy and serves nothing: the checks' stores and configuration
    stay with the process it replaced, the server with its workers. With its logging set up."""
    probe = (
        "import json, sys, logging.config, gitlab_pypi_proxy.supervisor; "
        "from gitlab_pypi_proxy.log_format import logging_config; "
        "logging.config.dictConfig(logging_config('info', 'json')); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    for module in (
        "gitlab_pypi_proxy.config",
        "gitlab_pypi_proxy.cli",
        "gitlab_pypi_proxy.storage",
        "diskcache",
        "sqlite3",
    ):
        assert module not in loaded
    assert "prometheus_client" not in loaded
    for module in ("asyncio", "uvicorn", "ssl", "importlib.metadata"):
        assert module not in loaded
