"""A resolve through the proxy against one against the index directly: `uv pip compile` of a tree
of 16 wheels of 1 MiB each (a top package, 5 it requires, 2 each of those require) on the GitLab
double, which serves ranges and offers no PEP 658 sidecar, with 50 ms of latency per request.
Each proxy run is cold (a fresh cache); uv's own cache is off. The double counts the GETs of
wheels it answers: whole ones, and ranges.

The double answers as bench.upstream serves it (a simple page asked with a trailing slash, as uv
asks, is GitLab's page). `.venv/bin/python -m bench.resolve [--repeats N]`;
BENCH_PROXY_SRC=/some/checkout measures that checkout's proxy (bench.servers)."""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.processes import Processes
from bench.servers import PROXY_SRC
from bench.upstream import wrap
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.demo.server import free_port
from tests.clients import isolated_env, uv_binary
from tests.proxy_process import write_config
from tests.servers import serve

LATENCY = 0.05
PAD = 2**20
TOKEN = "bench-resolve"


def tree() -> dict[str, list[str]]:
    middle = [f"resolve-a{i}" for i in range(5)]
    packages = {"resolve-top": middle}
    for i, name in enumerate(middle):
        leaves = [f"resolve-b{i}{j}" for j in range(2)]
        packages[name] = leaves
        packages.update((leaf, []) for leaf in leaves)
    return packages


def compile_seconds(index_url: str, home: Path) -> float:
    home.mkdir(parents=True, exist_ok=True)
    requirements = home / "requirements.in"
    requirements.write_text("resolve-top\n")
    command = [uv_binary(), "pip", "compile", "--no-cache", "--python", sys.executable]
    command += ["--index-url", index_url, str(requirements)]
    started = time.monotonic()
    done = subprocess.run(command, env=isolated_env(home), capture_output=True, text=True)
    if done.returncode != 0 or "resolve-b41==1.0" not in done.stdout:
        raise RuntimeError(f"uv pip compile failed:\n{done.stderr[-2000:]}")
    return time.monotonic() - started


def wheel_gets(double: GitLabDouble, since: int) -> tuple[int, int]:
    """(whole, ranged) GETs of wheels the double answered since request number `since`."""
    gets = [
        r
        for r in double.requests[since:]
        if r.method == "GET" and "/files/" in r.path and r.path.endswith(".whl")
    ]
    ranged = sum(1 for r in gets if "range" in r.headers)
    return len(gets) - ranged, ranged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    double = GitLabDouble(latency=LATENCY)
    double.add_project(11, "bench/resolve", public=True)
    double.add_token(TOKEN, read={11})
    for name, requires in tree().items():
        double.add_package_file(
            11, name, "1.0", *make_wheel(name, "1.0", requires_dist=requires, pad_bytes=PAD)
        )
    rows: dict[str, list[float]] = {"direct": [], "proxy": []}
    gets: dict[str, list[tuple[int, int]]] = {"direct": [], "proxy": []}
    with tempfile.TemporaryDirectory() as work, serve(wrap(double)) as server:
        double.external_url = server.url  # where its pages link the files
        procs = Processes(Path(work))
        try:
            for rep in range(args.repeats):
                before = len(double.requests)
                direct = f"{server.url}/api/v4/projects/11/packages/pypi/simple/"
                rows["direct"].append(compile_seconds(direct, Path(work, f"direct-{rep}")))
                gets["direct"].append(wheel_gets(double, before))
                directory = Path(work, f"proxy-{rep}")
                directory.mkdir()
                sources = [{"name": "bench", "gitlab_project": 11}]
                config = write_config(directory, server.url, sources, token=TOKEN)
                port = free_port()
                command = [sys.executable, "-m", "gitlab_pypi_proxy", "serve", "--config"]
                command += [str(config), "--port", str(port), "--workers", "2"]
                running = procs.start(f"proxy-{rep}", command, cwd=PROXY_SRC)
                url = f"http://127.0.0.1:{port}"
                procs.wait_http(running, f"{url}/healthz")
                before = len(double.requests)
                rows["proxy"].append(compile_seconds(f"{url}/simple/", Path(work, f"uv-{rep}")))
                gets["proxy"].append(wheel_gets(double, before))
                procs.stop(running)
        finally:
            procs.stop_all()
    direct, proxy = (statistics.median(rows[k]) for k in ("direct", "proxy"))
    print(
        f"uv pip compile, 16 wheels of 1 MiB, {LATENCY * 1000:.0f} ms latency, "
        f"{args.repeats} runs (median)"
    )
    print("| | seconds | wheel GETs GitLab answered: whole, ranged (most in a run) |")
    print("|---|---|---|")
    for key in ("direct", "proxy"):
        whole, ranged = max(gets[key])
        print(f"| {key} | {statistics.median(rows[key]):.2f} | {whole}, {ranged} |")
    print(f"proxy / direct: {proxy / direct:.2f}x (target ≤ 1.5x)")


if __name__ == "__main__":
    main()
