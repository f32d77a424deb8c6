"""`gitlab-pypi-proxy demo`: a trial that needs no GitLab. The GitLab double (in this process)
holds a few sample packages in one project, the proxy (`serve`, a child process) stands in front
of it with a user who may upload, and the lines to try with pip, uv and twine are printed. Ctrl-C
(or SIGTERM) stops both and removes the demo's directory unless it was given.
"""

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.demo.server import free_port, serve

PROJECT_ID, PROJECT_PATH = 1, "demo/platform"
READ_TOKEN, UPLOAD_TOKEN = "demo-read-token", "demo-upload-token"
USER, PASSWORD = "demo", "demo"
# name, version, requirements
PACKAGES = (
    ("demo-words", "2.0", []),
    ("demo-greeting", "1.0", []),
    ("demo-greeting", "1.1", ["demo-words>=2"]),
)
_STARTUP_SECONDS = 60


def sample_gitlab() -> GitLabDouble:
    """Project demo/platform with PACKAGES, readable with READ_TOKEN, writable with
    UPLOAD_TOKEN."""
    double = GitLabDouble()
    double.add_project(PROJECT_ID, PROJECT_PATH)
    double.add_token(READ_TOKEN, read={PROJECT_ID})
    double.add_token(UPLOAD_TOKEN, write={PROJECT_ID})
    for name, version, requires in PACKAGES:
        filename, data = make_wheel(name, version, requires_dist=requires)
        double.add_package_file(PROJECT_ID, name, version, filename, data)
    return double


def config_text(gitlab_url: str, cache: Path) -> str:
    return f"""# Written by `gitlab-pypi-proxy demo`: the proxy in front of a GitLab test double.
[server]
workers = 1

[cache]
directory = "{cache}"

[gitlab]
url = "{gitlab_url}"
token = "{READ_TOKEN}"

[[sources]]
name = "platform"
gitlab_project = "{PROJECT_PATH}"

[upload]
default_source = "platform"

[[users]]
name = "{USER}"
password = "{PASSWORD}"
upload = ["platform"]
gitlab_token = "{UPLOAD_TOKEN}"
"""


def _port(wanted: int) -> int:
    """`wanted` if it is free on loopback, else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def try_lines(url: str, config: Path) -> str:
    index, upload = f"{url}/simple/", f"{url}/upload/"
    packages = ", ".join(f"{n} {v}" for n, v, _ in PACKAGES)
    return f"""
The demo runs: a GitLab double with project {PROJECT_PATH} ({packages}),
and the proxy in front of it.

  status page    {url}/
  package index  {index}
  configuration  {config}

Try, in another terminal (in a virtual environment):
  pip install --index-url {index} demo-greeting
  uv pip install --index-url {index} demo-greeting
  twine upload --repository-url {upload} -u {USER} -p {PASSWORD} dist/*
  uv publish --publish-url {upload} -u {USER} -p {PASSWORD} --check-url {index} dist/*

Ctrl-C stops both.
""".replace("\n  ", "\n    ")


def _answers(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _STARTUP_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)  # polled with a deadline: the proxy says nothing when it is up
    raise RuntimeError("the proxy did not start (its log is above)")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(port: int, directory: Path | None) -> int:
    """Run the demo until Ctrl-C or SIGTERM; the exit status."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    # Ctrl-C too when started with SIGINT ignored (a script's background job): Python installs
    # no handler then, and the demo would never stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    home = directory or Path(tempfile.mkdtemp(prefix="gitlab-pypi-proxy-demo-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        with serve(sample_gitlab().app) as gitlab:
            config = home / "proxy.toml"
            config.write_text(config_text(gitlab.url, home / "cache"))
            port = _port(port)
            url = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "gitlab_pypi_proxy", "serve", "--config", str(config)]
            process = subprocess.Popen([*command, "--port", str(port)])
            try:  # the proxy stops first, then the double it stands in front of
                _answers(url, process)
                print(try_lines(url, config), flush=True)
                return process.wait()  # the proxy stopped on its own: the demo ends with it
            finally:
                _stop(process)
    except KeyboardInterrupt:
        print("\nthe demo stopped", file=sys.stderr, flush=True)
        return 0
    except RuntimeError as exc:
        print(f"gitlab-pypi-proxy demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if directory is None:
            shutil.rmtree(home, ignore_errors=True)
