"""The process `serve` becomes once its checks pass: uvicorn's supervisor of the workers, holding
nothing else.

`serve` checks the configuration, the cache and the shared stores with the whole proxy imported,
then replaces itself with this module (`exec`: the same pid, stdio and signals, a fresh memory
image), so the one process that lives as long as the proxy and serves no request holds uvicorn
and the logging setup only (~27 MiB, not the ~36 MiB the checks leave behind). What it needs comes
in one environment variable, read and removed before any worker starts. Keep its imports light:
no gitlab_pypi_proxy.config, gitlab_pypi_proxy.storage, prometheus_client or diskcache here.
"""

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from gitlab_pypi_proxy.internals.spawning import interpreter_flags, without_resource_tracker

ENV = "GITLAB_PYPI_PROXY_SUPERVISOR"
PID_ENV = "GITLAB_PYPI_PROXY_SUPERVISOR_PID"  # its workers find it here (the status page)
STOPS = (signal.SIGTERM, signal.SIGINT)  # what ends `serve`; the runtime directory goes first


def become(runtime: Path, uvicorn_settings: dict[str, Any]) -> NoReturn:
    """Replace this process with the supervisor, which runs `uvicorn.run(**uvicorn_settings)`
    and removes `runtime` (gitlab_pypi_proxy.runtime_dir) when it ends. The stop signals are blocked
    across the exec (a blocked signal stays pending in the new image) until its handlers are in
    place."""
    os.environ[ENV] = json.dumps({"runtime": str(runtime), "uvicorn": uvicorn_settings})
    root = str(Path(__file__).resolve().parent.parent)  # this very proxy package, wherever it is
    code = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from gitlab_pypi_proxy.supervisor import main; main()"
    )
    flags = interpreter_flags()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    # The arguments after the code are only what `ps` shows: the command that started it.
    os.execv(sys.executable, [sys.executable, *flags, "-c", code, *sys.argv[1:]])


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
    remove_on_stop(runtime)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # the workers inherit the mask: never keep it
    try:
        import uvicorn

        without_resource_tracker()
        uvicorn.run("gitlab_pypi_proxy.cli:app_factory", factory=True, **settings["uvicorn"])
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
