"""Run the benchmark: start everything on loopback, run the scenarios, stop everything, print and
save a markdown report (`bash bench/run [--quick] [--only 1,2,...]`; `--real-index` runs the
opt-in scenario against the public index instead, bench.real_index)."""

import argparse
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import dataset, real_index, s3_backend, scenarios, servers
from bench.processes import Processes
from bench.report import check, table, value, verdict

RESULTS = servers.ROOT / "bench" / "results"
HARD_LIMIT = 900  # seconds: past this the run is stopped, everything cleaned up
REAL_INDEX_LIMIT = 3600  # the same, for --real-index (the public index's pace, 20 installs)
SKIP_AFTER = 720  # seconds: a scenario not started by then is skipped
LATENCY = 0.05  # the upstream's per-request latency in the cold scenarios


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {ram:.0f} GiB RAM, Linux {platform.release()}"


def versions() -> str:
    def peer(name: str) -> str:
        out = subprocess.run(
            [str(servers.PEERS_BIN / "pip"), "show", name], capture_output=True, text=True
        ).stdout
        return next((ln.split()[1] for ln in out.splitlines() if ln.startswith("Version:")), "?")

    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return (
        f"proxpi {peer('proxpi')} (gunicorn, 1 process, 16 threads), "
        f"devpi-server {peer('devpi-server')} (defaults), {nginx.split(': ')[-1]}, "
        f"this proxy with {servers.WORKERS} uvicorn workers{_source()}, "
        f"Python {platform.python_version()}"
    )


def _source() -> str:
    if servers.PROXY_SRC == servers.ROOT:
        return ""
    return f" (code from {servers.PROXY_SRC})"


def _targets_1_2(pages: scenarios.Samples, files: scenarios.Samples) -> list[str]:
    lines = []
    for kind in ("HTML", "JSON"):
        metric = f"{kind} page, req/s"
        mine = value(pages, metric, "proxy")
        lines.append(
            f"- warm {kind} page ≥ 2x proxpi: "
            f"{verdict(check(mine >= 2 * value(pages, metric, 'proxpi')))}, "
            f"≥ 2x devpi: {verdict(check(mine >= 2 * value(pages, metric, 'devpi')))}, "
            f"≥ 50% of nginx: {verdict(check(mine >= 0.5 * value(pages, metric, 'nginx')))} "
            f"({mine / value(pages, metric, 'nginx'):.0%})"
        )
        p99 = f"{kind} page, p99 ms"
        ratio = value(pages, p99, "proxy") / value(pages, p99, "nginx")
        lines.append(
            f"- warm {kind} page p99 ≤ 3x nginx's: {verdict(check(ratio <= 3))} ({ratio:.2f}x)"
        )
    for size in ("1 MiB", "100 MiB"):
        metric = f"{size} file, MiB/s"
        share = value(files, metric, "proxy") / value(files, metric, "nginx")
        accel = value(files, metric, servers.ACCEL) / value(files, metric, "nginx")
        lines.append(
            f"- warm {size} file ≥ 80% of nginx: {verdict(check(share >= 0.8))} ({share:.0%}); "
            f"behind nginx with accel_redirect: {verdict(check(accel >= 0.8))} ({accel:.0%})"
        )
    return lines


def _targets_6(clients: scenarios.Samples) -> list[str]:
    lines = []
    for what, name in (("install 30", ""), (scenarios.TREE, ", a tree")):
        for client in ("uv", "pip"):
            for label in ("cold", "warm"):
                lines.append(_target_6(clients, f"{client} {what}, {label}, s", label, name))
    return lines


def _target_6(clients: scenarios.Samples, metric: str, label: str, name: str) -> str:
    client = metric.split()[0]
    mine = value(clients, metric, "proxy")
    fastest = min(value(clients, metric, p) for p in ("proxpi", "devpi"))
    ok = verdict(check(mine <= 0.9 * fastest))
    line = f"- {client}{name} {label}: ≤ 0.9x the fastest peer {ok} ({mine / fastest:.2f}x)"
    if label == "warm":
        nginx = mine / value(clients, metric, "nginx")
        line += f", within 1.15x of nginx {verdict(check(nginx <= 1.15))} ({nginx:.2f}x)"
    return line


def _long_histories(
    procs: Processes,
    work: Path,
    up: servers.Upstream,
    proxpi: servers.Target,
    devpi: servers.Target,
    settings: scenarios.Settings,
    verdicts: list[str],
) -> str:
    """Scenario 7 on servers of their own over the long histories' project."""
    project = (dataset.VERSIONS_PROJECT,)
    mine = servers.start_proxy(procs, work, up, project, label="proxy (p20)")
    proxpi_20 = servers.start_proxpi(procs, work, up, project, label="proxpi (p20)")
    devpi_20 = servers.add_devpi_mirror(work, devpi, up, dataset.VERSIONS_PROJECT)
    try:
        samples = scenarios.long_histories(up, mine, [proxpi_20, devpi_20], settings, LATENCY)
    finally:
        procs.stop(mine.running)
        procs.stop(proxpi_20.running)
    wide = "10,000 files"
    for kind in ("cold page", "warm page"):
        mine_ms = value(samples, f"{kind}, {wide}, ms", mine.name)
        peers = [value(samples, f"{kind}, {wide}, ms", p.name) for p in (proxpi_20, devpi_20)]
        blocked = value(samples, f"event loop blocked, {kind.split()[0]} {wide}, max ms", mine.name)
        verdicts.append(
            f"- big project, {kind}: faster than both peers {verdict(check(mine_ms < min(peers)))} "
            f"({mine_ms:.0f} ms, peers {min(peers):.0f}+ ms); event loop blocked ≤ 10 ms "
            f"{verdict(check(blocked <= 10))} ({blocked:.0f} ms at most, outside probe)"
        )
    for label in ("2,000 versions", "10,000 files"):
        ms = value(samples, f"cold page, {label}, ms", mine.name)
        asked = value(samples, f"cold page, {label}, GitLab requests", mine.name)
        verdicts.append(
            f"- cold page, {label}: ≤ 1.5 s {verdict(check(ms <= 1500))} ({ms:.0f} ms), "
            f"≤ 25 GitLab requests {verdict(check(asked <= 25))} ({asked:g})"
        )
    return (
        f"### 7. Long histories, {LATENCY * 1000:.0f} ms upstream latency: one GitLab project "
        f"with names of {dataset.HISTORY:,} versions (one wheel each, or 5 files each), and a "
        f"short name with 3 versions that {dataset.SHORT_NAME_OTHERS:,} newer packages' names "
        "contain (warm page: wrk, 16 connections)\n\n" + table(samples, mine.name)
    )


def run(args: argparse.Namespace, procs: Processes, work: Path) -> str:
    started = time.monotonic()
    quick = args.quick
    settings = scenarios.Settings(
        repeats=1 if quick else 3,
        seconds=2 if quick else 3,
        install_repeats=1 if quick else 2,
        herd_repeats=1 if quick else 2,
        deadline=started + (240 if quick else 660),
        work=work,
    )
    only = {int(n) for n in args.only.split(",")} if args.only else set(range(1, 9))
    data = RESULTS / "data"
    print("data set ...", file=sys.stderr)
    files = dataset.build(data)
    print("starting the upstream double, this proxy, proxpi, devpi, nginx ...", file=sys.stderr)
    up = servers.start_upstream(procs, data)
    proxy = servers.start_proxy(procs, work, up, (dataset.MAIN_PROJECT,))
    proxpi = servers.start_proxpi(procs, work, up)
    devpi = servers.start_devpi(procs, work, up)
    nginx = servers.start_nginx(procs, work, data)
    everyone = [proxy, proxpi, devpi, nginx]
    sections: list[str] = []
    verdicts: list[str] = []
    pages = file_rates = {}

    def step(number: int, title: str) -> bool:
        if number not in only:
            return False
        elapsed = time.monotonic() - started
        if elapsed > SKIP_AFTER:  # the report of what ran beats no report at all
            sections.append(f"### {number}. {title}: skipped, the run was past {SKIP_AFTER} s\n")
            return False
        print(f"{number}. {title} ({elapsed:.0f}s)", file=sys.stderr)
        return True

    if step(1, "warm pages"):
        pages = scenarios.warm_pages(everyone, settings)
        sections.append("### 1. Warm simple page, 64 connections (wrk)\n\n" + table(pages, "proxy"))
    if step(2, "warm files"):
        front, behind = servers.start_proxy_behind_nginx(procs, work, up)
        try:
            file_rates = scenarios.warm_files([*everyone, front], files, settings)
        finally:
            procs.stop(front.running)
            procs.stop(behind.running)
        sections.append(
            "### 2. Warm cached file download (4 curl processes at once, each downloading the file "
            "50 times (1 MiB) or twice (100 MiB) over keep-alive)\n\n" + table(file_rates, "proxy")
        )
    if 1 in only and 2 in only:
        verdicts += _targets_1_2(pages, file_rates)
    if step(3, "cold pages"):
        spread = dataset.SPREAD_PROJECTS
        fan_out = servers.start_proxy(procs, work, up, spread, label="proxy (10 sources)")
        proxpi_10 = servers.start_proxpi(procs, work, up, spread, label="proxpi (10 sources)")
        devpi_10 = servers.add_devpi_merged(work, devpi, up, spread)
        try:
            cold = scenarios.cold_pages(
                up, [fan_out, proxpi_10, devpi_10], [proxpi, devpi], settings, LATENCY
            )
        finally:
            procs.stop(fan_out.running)
            procs.stop(proxpi_10.running)
        sections.append(
            f"### 3. Cold page, {LATENCY * 1000:.0f} ms upstream latency "
            "(over 10 GitLab projects; the peers also over one, as they are usually run)\n\n"
            + table(cold, "proxy (10 sources)")
        )
        mine = value(cold, "cold page, ms", "proxy (10 sources)")
        trip = value(cold, "cold page, ms", "one round trip")
        same = [value(cold, "cold page, ms", f"{p} (10 sources)") for p in ("proxpi", "devpi")]
        single = [value(cold, "cold page, ms", p) for p in ("proxpi", "devpi")]
        verdicts.append(
            "- cold page over 10 sources ≤ 2.2x one round trip (two dependent GitLab calls while "
            f"exact PEP 700 upload times are kept): {verdict(check(mine <= 2.2 * trip))} "
            f"({mine / trip:.2f}x); lower than each peer's "
            f"over the same 10: {verdict(check(mine < min(same)))}; lower than each peer's over "
            f"one source: {verdict(check(mine < min(single)))}"
        )
    if step(7, "long histories"):
        sections.append(_long_histories(procs, work, up, proxpi, devpi, settings, verdicts))
    if step(4, "thundering herd"):
        herd = scenarios.herd(up, [proxy, proxpi, devpi], files, settings, LATENCY)
        sections.append(
            "### 4. Thundering herd: 50 concurrent downloads of one uncached 50 MiB file "
            f"(curl, {LATENCY * 1000:.0f} ms upstream latency)\n\n" + table(herd, "proxy")
        )
        downloads = value(herd, "upstream downloads", "proxy")
        complete = value(herd, "complete of 50", "proxy")
        verdicts.append(
            f"- herd: 1 upstream download: {verdict(check(downloads == 1))} ({downloads:g}), "
            f"all 50 complete: {verdict(check(complete == 50))} ({complete:g})"
        )
    if step(6, "real clients"):
        clients = scenarios.installs(up, everyone, settings, LATENCY)
        sections.append(
            "### 6. Real clients: install 30 packages, and a dependency tree of "
            f"{dataset.TREE_SIZE} packages (one asked for, five it requires, two each of those "
            "require), into an empty target, client cache off "
            f"(cold: names the server never served, {LATENCY * 1000:.0f} ms upstream latency; "
            "warm: the same again)\n\n" + table(clients, "proxy")
        )
        verdicts += _targets_6(clients)
    if step(5, "memory"):
        mem = scenarios.memory(proxy, [proxpi, devpi], files, settings)
        sections.append(
            "### 5. Peak RSS while streaming 1 GiB (sampled every 50 ms; all processes of the "
            "server, and its largest one)\n\n" + table(mem, "proxy")
        )
        peaks = [
            value(mem, m, "proxy")
            for m in (
                "1 GiB download cold, MiB (all)",
                "1 GiB download warm, MiB (all)",
                "1 GiB upload, MiB (all)",
            )
        ]
        measured = [p for p in peaks if not math.isnan(p)]
        upload = "n/a (no upload route yet)" if math.isnan(peaks[2]) else f"{peaks[2]:.0f} MiB"
        verdicts.append(
            f"- peak RSS under 150 MiB (all processes): "
            f"{verdict(check(max(measured) < 150))} (download {max(peaks[:2]):.0f} MiB, "
            f"upload {upload})"
        )
    if step(8, "S3 backend"):
        s3 = s3_backend.run(procs, work, up, files, settings, LATENCY)
        sections.append(
            "### 8. S3 backend (SeaweedFS and Redis on the same machine) against local disk: a "
            "warm 100 MiB file (4 curl processes at once, twice each), and 50 concurrent downloads "
            f"of one uncached 50 MiB file ({LATENCY * 1000:.0f} ms upstream latency)\n\n"
            + table(s3, s3_backend.LOCAL)
        )
        downloads = value(s3, "upstream downloads", s3_backend.S3)
        verdicts.append(
            f"- S3 herd: 1 upstream download: {verdict(check(downloads == 1))} ({downloads:g})"
        )
    elapsed = time.monotonic() - started
    return "\n".join(
        [
            f"## Benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"Command: `bash bench/run{' --quick' if quick else ''}"
            f"{' --only ' + args.only if args.only else ''}`, {elapsed:.0f} s. "
            f"Machine: {machine()}.",
            f"Servers: {versions()}. Medians over the runs in the last column.",
            "",
            *(s + "\n" for s in sections),
            "### Targets",
            "",
            *verdicts,
            "",
        ]
    )


def run_real_index(procs: Processes, work: Path) -> str:
    started = time.monotonic()
    print("9. the public index (network) ...", file=sys.stderr)
    result = real_index.run(procs, work)
    elapsed = time.monotonic() - started
    return "\n".join(
        [
            f"## Benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"Command: `bash bench/run --real-index`, {elapsed:.0f} s. Machine: {machine()}.",
            f"Servers: {versions()}. One run each.",
            "",
            real_index.report(result),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run of each scenario")
    parser.add_argument("--only", help="comma-separated scenario numbers, e.g. 1,3")
    parser.add_argument("--keep", action="store_true", help="keep the caches of this run")
    parser.add_argument(
        "--real-index",
        action="store_true",
        help="only the scenario that installs from the public index (network)",
    )
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work = (RESULTS / f"run-{stamp}").resolve()
    work.mkdir(parents=True)
    procs = Processes(work)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    def timeout(signum: int, frame: Any) -> None:
        raise TimeoutError("the benchmark ran past its time limit")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(REAL_INDEX_LIMIT if args.real_index else HARD_LIMIT)
    try:
        text = run_real_index(procs, work) if args.real_index else run(args, procs, work)
    finally:
        signal.alarm(0)
        procs.stop_all()
        if not args.keep:  # caches and server state: gigabytes; the logs stay
            for path in work.iterdir():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
    out = RESULTS / f"bench-{stamp}.md"
    out.write_text(text)
    (RESULTS / "latest.md").write_text(text)
    print(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
