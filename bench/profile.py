"""Sample this proxy's workers with py-spy under load and print where the time goes
(`bash bench/run --profile`): the warm page path, the warm file path, and cold pages over ten
sources. Raw collapsed stacks are kept in bench/results/ for a flame graph."""

import collections
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx2

from bench import dataset, load, servers
from bench.main import RESULTS
from bench.processes import Processes
from bench.scenarios import set_latency
from gitlab_pypi_proxy.demo.server import free_port

SECONDS = 6


def py_spy(pid: int, out: Path, seconds: float, idle: bool = False) -> subprocess.Popen[bytes]:
    command = [str(servers.PEERS_BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses"]
    command += ["--duration", f"{seconds:g}", "--rate", "250", "--format", "raw"]
    command += ["--output", str(out), "--nonblocking"]
    if idle:
        command.append("--idle")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summary(raw: Path, top: int = 15) -> str:
    """Top functions by own samples and by samples under them (inclusive), as percentages."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        n = int(count)
        total += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            under[frame] += n
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += [
        "",
        "inclusive (frames of gitlab_pypi_proxy/, starlette, uvicorn, httpx2, diskcache):",
    ]
    keep = ("gitlab_pypi_proxy/", "starlette", "uvicorn", "httpx2", "diskcache", "anyio")
    ranked = [(f, n) for f, n in under.most_common() if any(k in f for k in keep)]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in ranked[:top]]
    return "\n".join(lines)


def main() -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work = (RESULTS / f"profile-{stamp}").resolve()
    work.mkdir(parents=True)
    procs = Processes(work)
    report = []
    try:
        data = RESULTS / "data"
        files = dataset.build(data)
        up = servers.start_upstream(procs, data)
        proxy = servers.start_proxy(procs, work, up, (dataset.MAIN_PROJECT,))
        pid = proxy.running.pid
        name = dataset.package_name(dataset.PACKAGES - 1)
        mib = dataset.find(files, "bench-mib")
        for label, url, connections in (
            ("warm HTML page", f"{proxy.index_url}{name}/", 64),
            ("warm 1 MiB file", load.file_url(proxy.index_url, mib.name, mib.filename), 16),
        ):
            load.wrk(url, connections=connections, seconds=1)
            out = work / f"{label.replace(' ', '-')}.txt"
            spy = py_spy(pid, out, SECONDS)
            time.sleep(0.5)  # py-spy attaches before the load starts; not a synchronisation
            result = load.wrk(url, connections=connections, seconds=SECONDS)
            spy.wait(timeout=60)
            rate = f"{result.requests_per_s:.0f} req/s, {result.bytes_per_s / 2**20:.0f} MiB/s"
            report.append(f"## {label} ({rate} while sampled)\n\n{summary(out)}\n")
        # index_ttl 0: every request refetches all ten pages, the cold path without new names
        for app in ("bare", "starlette"):
            port = free_port()
            command = [sys.executable, "-m", "uvicorn", f"bench.ceiling:{app}", "--port", str(port)]
            command += ["--workers", str(servers.WORKERS), "--log-level", "warning"]
            command += ["--loop", "uvloop", "--http", "httptools", "--lifespan", "off"]
            running = procs.start(f"ceiling-{app}", command, cwd=servers.ROOT)
            url = f"http://127.0.0.1:{port}/simple/{name}/"
            procs.wait_http(running, url)
            load.wrk(url, connections=64, seconds=1)
            result = load.wrk(url, connections=64, seconds=SECONDS)
            proxy_rate = load.wrk(f"{proxy.index_url}{name}/", connections=64, seconds=SECONDS)
            report.append(
                f"## ceiling: the same HTML page from a {app} ASGI app, {servers.WORKERS} uvicorn "
                f"workers: {result.requests_per_s:.0f} req/s (this proxy right after: "
                f"{proxy_rate.requests_per_s:.0f} req/s)\n"
            )
            procs.stop(running)
        nginx = servers.start_nginx(procs, work, data)
        load.wrk(f"{nginx.index_url}{name}/", connections=64, seconds=1)
        result = load.wrk(f"{nginx.index_url}{name}/", connections=64, seconds=SECONDS)
        report.append(f"## nginx, the same page from disk: {result.requests_per_s:.0f} req/s\n")
        procs.stop(nginx.running)
        fan_out = servers.start_proxy(
            procs, work, up, dataset.SPREAD_PROJECTS, label="proxy (10 sources)", index_ttl=0
        )
        set_latency(up, 0)
        out = work / "cold-page-10-sources.txt"
        timings: list[float] = []
        with httpx2.Client(timeout=60) as client:
            client.get(f"{fan_out.index_url}spread-0/").raise_for_status()
            spy = py_spy(fan_out.running.pid, out, SECONDS)
            time.sleep(0.5)
            deadline = time.monotonic() + SECONDS - 1
            while time.monotonic() < deadline:
                started = time.monotonic()
                client.get(f"{fan_out.index_url}spread-{len(timings) % 10}/").raise_for_status()
                timings.append((time.monotonic() - started) * 1000)
        spy.wait(timeout=60)
        median = sorted(timings)[len(timings) // 2]
        report.append(
            "## page over 10 sources refetched every time (index_ttl 0), upstream latency 0 "
            f"({len(timings)} pages one after another, median {median:.0f} ms)\n\n{summary(out)}\n"
        )
    finally:
        procs.stop_all()
    text = "\n".join(report)
    (work / "profile.md").write_text(text)
    print(text)
    print(f"raw stacks and this summary in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
