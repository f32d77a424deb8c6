"""`gitlab-pypi-proxy demo` as a newcomer runs it: it prints the lines to try, pip installs through
it, and Ctrl-C stops the proxy and the GitLab double."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import psutil

from gitlab_pypi_proxy.demo.server import free_port
from tests.clients import pip_install
from tests.waiting import wait_until


def test_demo_serves_its_samples_and_stops_both_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    output = tmp_path / "demo.log"
    command = [sys.executable, "-m", "gitlab_pypi_proxy", "demo", "--port", str(port)]
    command += ["--directory", str(tmp_path / "demo")]
    # a demo that does not end after Ctrl-C is sent SIGABRT: faulthandler writes where every thread
    # of it stands to its log, which the failure shows
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with output.open("wb") as log:
        # started with SIGINT ignored, as a script's background job is: Ctrl-C must still stop it
        demo = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        wait_until(
            lambda: "Ctrl-C stops both" in output.read_text() or demo.poll() is not None,
            "the demo to print what to try",
            60,
        )
        printed = output.read_text()
        index = f"http://127.0.0.1:{port}/simple/"
        assert f"pip install --index-url {index} demo-greeting" in printed
        assert f"uv publish --publish-url http://127.0.0.1:{port}/upload/" in printed
        assert "twine upload" in printed
        config = tmp_path / "demo" / "proxy.toml"
        gitlab_url = next(
            line.split('"')[1] for line in config.read_text().splitlines() if line.startswith("url")
        )
        proxy = psutil.Process(demo.pid).children()
        assert len(proxy) == 1 and "serve" in proxy[0].cmdline()

        installed = pip_install(index, tmp_path / "target", "demo-greeting", home=tmp_path / "h")
        assert installed.returncode == 0, installed.stderr
        assert (tmp_path / "target" / "demo_greeting").is_dir()
        assert (tmp_path / "target" / "demo_words").is_dir()  # its dependency, from the same GitLab

        demo.send_signal(signal.SIGINT)
        try:
            status = demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.send_signal(signal.SIGABRT)
            demo.wait(timeout=10)
            raise AssertionError(f"the demo did not end:\n{output.read_text()[-6000:]}") from None
        assert status == 0
        assert not proxy[0].is_running() or proxy[0].status() == psutil.STATUS_ZOMBIE
        for url in (f"http://127.0.0.1:{port}/healthz", gitlab_url):
            try:
                httpx2.get(url, timeout=2)
                raise AssertionError(f"{url} still answers after Ctrl-C")
            except httpx2.TransportError:
                pass
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
