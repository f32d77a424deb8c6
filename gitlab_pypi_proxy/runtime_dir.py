"""The directory the processes of one `serve` share for state that ends with them: Prometheus's
multiprocess files and each worker's view of the sources (gitlab_pypi_proxy.http.health).

Never under the cache directory: prometheus_client memory-maps its files, and a write into a
mapped page that a full disk cannot back kills the process with SIGBUS. It is made private
(mkdtemp, mode 0700) on the memory-backed /dev/shm when there is one, else in the temporary
directory, and removed when `serve` ends; gitlab_pypi_proxy.metrics writes its files out in full
before mapping them, so a file system that fills up later cannot take pages they already have."""

import os
import tempfile
from pathlib import Path

ENV = "GITLAB_PYPI_PROXY_RUNTIME_DIR"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the name prometheus_client reads
_MEMORY = Path("/dev/shm")


def create() -> Path:
    """Make the directory and point this process and its workers (the environment) at it.

    Must run before anything imports prometheus_client (gitlab_pypi_proxy.metrics) in this process.
    """
    memory = _MEMORY.is_dir() and os.access(_MEMORY, os.W_OK | os.X_OK)
    path = Path(tempfile.mkdtemp(prefix="gitlab-pypi-proxy-", dir=_MEMORY if memory else None))
    for part in ("metrics", "health"):
        (path / part).mkdir()
    os.environ[ENV] = str(path)
    os.environ[MULTIPROC_ENV] = str(path / "metrics")
    return path


def health_directory() -> Path | None:
    """Where the workers of this `serve` share source health; None outside `serve`."""
    value = os.environ.get(ENV)
    return Path(value) / "health" if value else None
