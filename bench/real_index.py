"""The real-index scenario, opt-in (`bash bench/run --real-index`): a real project's install from
the public index itself, through this proxy (the GitLab stand-in as its GitLab source, the public
index as its url source), proxpi, devpi and directly, cold and warm, with uv and with pip; then
the same warm uv install again and again through this proxy, its memory (every process) sampled
after each run once the workers went quiet, and its event loop probed throughout.

It reaches the network, so it is never part of the test suite, and it stays polite: no package
with wheels of hundreds of MiB, every server fetches each file once, and each client downloads
the set once per server and twice directly.
"""

import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import load, scenarios, servers
from bench.dataset import MAIN_PROJECT
from bench.processes import Processes, rss_bytes, tree_pids
from bench.report import table
from bench.scenarios import Samples, add

PUBLIC = "https://pypi.org/simple/"
# 66 packages with their dependencies
PACKAGES = [
    "django",
    "djangorestframework",
    "celery",
    "redis",
    "requests",
    "boto3",
    "pydantic",
    "fastapi",
    "sqlalchemy",
    "alembic",
    "psycopg[binary]",
    "numpy",
    "pandas",
    "cryptography",
    "sigstore",
]
PROXY = "proxy"
DIRECT = "directly"
REPEATS = 7  # warm uv installs through the proxy, memory sampled after each
QUIET = 3.0  # seconds after a run before the memory is sampled (a worker trims once it is quiet)
MIB = 2**20
_RESOLVED = re.compile(r"Resolved \d+ packages? in ([\d.]+)(ms|s)")


@dataclass
class Sample:
    """One install through this proxy: its time, its workers' longest loop block, its memory."""

    what: str
    seconds: float
    blocked_ms: float
    mib: list[int]  # each process, the supervisor first, sampled once it was quiet


@dataclass
class Result:
    samples: Samples = field(default_factory=dict)
    proxy: list[Sample] = field(default_factory=list)
    idle: list[list[int]] = field(default_factory=list)


def install(client: str, index_url: str, home: Path) -> tuple[float, float | None]:
    """(seconds, uv's resolve time in seconds or None) of one install of PACKAGES into an empty
    target, the client's cache off."""
    seconds, printed = scenarios.install(client, index_url, PACKAGES, home, timeout=900)
    found = _RESOLVED.search(printed)
    resolve = None
    if found:
        resolve = float(found.group(1)) / (1000 if found.group(2) == "ms" else 1)
    return seconds, resolve


def _mib(target: servers.Target) -> list[int]:
    """The resident memory of each of the server's processes, in MiB."""
    assert target.running is not None
    return [round(rss_bytes(pid) / MIB) for pid in tree_pids(target.running.pid)]


def _install(
    client: str, label: str, index_url: str, name: str, work: Path, into: Samples
) -> float:
    with tempfile.TemporaryDirectory(dir=work) as home:
        seconds, resolve = install(client, index_url, Path(home))
    add(into, f"{client} {label}, s", name, seconds)
    if resolve is not None:
        add(into, f"{client} {label}, resolve s", name, resolve)
    return seconds


def _through_proxy(
    client: str, label: str, proxy: servers.Target, work: Path, result: Result
) -> None:
    """An install through this proxy, its loop probed meanwhile, its memory sampled after."""
    lag = load.LoopLag(proxy.index_url.removesuffix("simple/") + "healthz")
    with lag:
        seconds = _install(client, label, proxy.index_url, PROXY, work, result.samples)
    blocked = lag.longest * 1000
    add(result.samples, f"{client} {label}, event loop blocked, max ms", PROXY, blocked)
    time.sleep(QUIET)  # the workers go quiet (and trim): what they keep, not what they did
    result.proxy.append(Sample(f"{client} {label}", seconds, blocked, _mib(proxy)))


def _start(procs: Processes, work: Path, up: servers.Upstream, client: str) -> list[servers.Target]:
    """Fresh servers, their caches empty, for one client's round."""
    directory = work / client
    extra = f'\n[[sources]]\nname = "pypi"\nurl = "{PUBLIC}"\n'
    proxy = servers.start_proxy(
        procs, directory, up, (MAIN_PROJECT,), label=PROXY, index_ttl=300, extra=extra
    )
    proxpi = servers.start_proxpi_of(procs, directory, PUBLIC, [])
    # as devpi's docs advise for the public index: each project's page asked for when needed,
    # not the list of 600,000 names first (which takes longer than its request timeout)
    options = ("mirror_no_project_list=True",)
    devpi = servers.start_devpi_of(procs, directory, PUBLIC, "pypi", options=options)
    return [proxy, proxpi, devpi]


def run(procs: Processes, work: Path) -> Result:
    """Each client's round on fresh servers; in uv's, the warm install repeated through this
    proxy."""
    result = Result()
    up = servers.start_upstream(procs, None)
    for client in ("uv", "pip"):
        proxy, *peers = targets = _start(procs, work, up, client)
        result.idle.append(_mib(proxy))
        try:
            for label in ("cold", "warm"):
                print(f"  {client} {label}", file=sys.stderr)
                _through_proxy(client, label, proxy, work, result)
                for peer in peers:
                    _install(client, label, peer.index_url, peer.name, work, result.samples)
                _install(client, label, PUBLIC, DIRECT, work, result.samples)
            repeats = range(2, REPEATS + 1) if client == "uv" else range(0)
            for n in repeats:
                print(f"  uv warm #{n}", file=sys.stderr)
                _through_proxy(client, f"warm #{n}", proxy, work, result)
        finally:
            for target in targets:
                if target.running is not None:
                    procs.stop(target.running)
    return result


def report(result: Result) -> str:
    """The scenario's section of the benchmark report."""
    samples = {m: v for m, v in result.samples.items() if "#" not in m}
    rows = [f"| idle | | | {sum(m)} | {' + '.join(map(str, m))} |" for m in result.idle[:1]]
    rows += [
        f"| {s.what} | {s.seconds:.1f} | {s.blocked_ms:.0f} | {sum(s.mib)} | "
        f"{' + '.join(map(str, s.mib))} |"
        for s in result.proxy
    ]
    return (
        f"### 9. The public index: `{' '.join(PACKAGES)}` (66 packages with their "
        "dependencies) into an empty target, client cache off, through each server (cold: a "
        "fresh server; warm: the same again) and directly; this proxy with "
        f"{servers.WORKERS} workers, the GitLab stand-in as its GitLab source and the public "
        "index as its url source\n\n"
        + table(samples, PROXY)
        + "\n\nThis proxy run after run: the install's time, its workers' longest event loop "
        f"block (a probe on /healthz), and its memory {QUIET:g} s after (resident, MiB: every "
        "process, the supervisor first)\n\n"
        "| run | s | loop blocked, max ms | MiB (all) | each |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
