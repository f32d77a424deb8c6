"""Run the proxy as users do (`python -m gitlab_pypi_proxy serve`) on a loopback port, for
end-to-end tests."""

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from gitlab_pypi_proxy.cli import CONFIG_ENV
from gitlab_pypi_proxy.demo.server import free_port
from tests.waiting import wait_until

_STARTUP_SECONDS = 30


def write_config(
    directory: Path,
    gitlab_url: str,
    sources: list[dict[str, object]],
    *,
    token: str | None = None,
    index_ttl: int = 300,
    offline: bool = False,
    max_size: str | None = None,
    extra: str = "",
    gitlab: dict[str, object] | None = None,
    cache: dict[str, object] | None = None,
) -> Path:
    """A config file for the proxy; `sources` are [[sources]] tables in priority order, `gitlab`
    and `cache` more keys of those tables (`extra` is appended after the sources); [gitlab]
    timeout is 10 unless `gitlab` says otherwise."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "[cache]",
        f"directory = {value(str(directory / 'cache'))}",
        f"index_ttl = {index_ttl}",
        f"offline = {value(offline)}",
        *([f"max_size = {value(max_size)}"] if max_size else []),
        *(f"{k} = {value(v)}" for k, v in (cache or {}).items()),
        "[gitlab]",
        f"url = {value(gitlab_url)}",
        *([] if "timeout" in (gitlab or {}) else ["timeout = 10"]),
    ]
    if token:
        lines.append(f"token = {value(token)}")
    lines += [f"{k} = {value(v)}" for k, v in (gitlab or {}).items()]
    for source in sources:
        lines.append("[[sources]]")
        lines += [f"{k} = {value(v)}" for k, v in source.items()]
    path = directory / "proxy.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@dataclass
class ProxyProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def open_files_under(self, directory: Path) -> list[str]:
        """The files under `directory` the proxy holds open (an unlinked spool file shows as
        '<dir>/#123 (deleted)')."""
        held = []
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                target = str(fd.readlink())
            except FileNotFoundError:  # closed while listing
                continue
            if target.startswith(str(directory)):
                held.append(target)
        return held

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_proxy(
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
    config_workers: bool = False,
    preexec_fn: Callable[[], None] | None = None,
    config_from_env: bool = False,
    port: int | None = None,
) -> ProxyProcess:
    """Start the proxy and wait (bounded) until it answers its own /healthz: with one worker,
    unless `args` say otherwise or `config_workers` leaves it to the configuration; the config
    named by --config, or by GITLAB_PYPI_PROXY_CONFIG alone with `config_from_env`.
    `preexec_fn` runs in the child before the proxy starts (its resource limits, say)."""
    port = port or free_port()
    log_path = config.parent / f"proxy-{port}.log"
    command = [sys.executable, "-m", "gitlab_pypi_proxy", "serve"]
    if config_from_env:
        env = {**(env or {}), CONFIG_ENV: str(config)}
    else:
        command += ["--config", str(config)]
    command += ["--port", str(port)]
    if "--workers" not in args and not config_workers:
        # one worker, as these tests were written for; the default ("auto") is tested on its own
        command += ["--workers", "1"]
    command += list(args)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )
    proxy = ProxyProcess(f"http://127.0.0.1:{port}", process, log_path, command)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"proxy exited with {process.returncode}:\n{proxy.log()}")
        try:
            return httpx2.get(f"{proxy.url}/healthz", timeout=1).status_code == 200
        except httpx2.TransportError:
            return False

    try:
        wait_until(answers, "the proxy answering /healthz", _STARTUP_SECONDS)
    except AssertionError:
        proxy.stop()
        raise RuntimeError(f"proxy did not start in {_STARTUP_SECONDS}s:\n{proxy.log()}") from None
    return proxy
