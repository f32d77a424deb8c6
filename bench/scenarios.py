"""The seven scenarios. Each returns rows of {metric: {server: [one value per repetition]}}."""

import hashlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from bench import dataset, load
from bench.processes import tree_rss
from bench.servers import Target, Upstream
from tests.clients import isolated_env, uv_binary

Samples = dict[str, dict[str, list[float]]]  # metric -> server -> values
MIB = 2**20


@dataclass
class Settings:
    repeats: int
    seconds: float  # one wrk run
    install_repeats: int
    herd_repeats: int
    deadline: float  # time.monotonic() past which optional repetitions are skipped
    work: Path = field(default_factory=Path)


def add(samples: Samples, metric: str, server: str, value: float) -> None:
    samples.setdefault(metric, {}).setdefault(server, []).append(value)


def _time_left(settings: Settings) -> bool:
    return time.monotonic() < settings.deadline


def set_latency(up: Upstream, seconds: float) -> None:
    httpx2.post(
        f"{up.url}/_bench/latency", params={"seconds": seconds}, timeout=10
    ).raise_for_status()


def upstream_count(up: Upstream, prefix: str, *, whole: bool = False) -> int:
    """Requests under `prefix`; `whole`: only whole-file GETs, not ranged reads."""
    response = httpx2.get(f"{up.url}/_bench/count", params={"prefix": prefix}, timeout=10)
    return int(response.json()["whole" if whole else "count"])


# --- 1. warm simple page -----------------------------------------------------------------------


def warm_pages(targets: list[Target], settings: Settings) -> Samples:
    samples: Samples = {}
    name = dataset.package_name(dataset.PACKAGES - 1)
    for target in targets:
        url = f"{target.index_url}{name}/"
        for label, accept in (("HTML", "text/html"), ("JSON", load.JSON_ACCEPT)):
            load.wrk(url, connections=64, seconds=1, accept=accept)  # warm every worker
            for _ in range(settings.repeats):
                result = load.wrk(url, connections=64, seconds=settings.seconds, accept=accept)
                add(samples, f"{label} page, req/s", target.name, result.requests_per_s)
                add(samples, f"{label} page, p50 ms", target.name, result.p50 * 1000)
                add(samples, f"{label} page, p99 ms", target.name, result.p99 * 1000)
                add(samples, f"{label} page, errors", target.name, result.errors)
    return samples


# --- 2. warm cached file -----------------------------------------------------------------------


def warm_file(url: str) -> None:
    """Download until the server answers from its cache (proxpi redirects until it has the file)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with httpx2.stream("GET", url, timeout=120) as response:
            for _ in response.iter_bytes(MIB):
                pass
            if response.status_code == 200:
                return
        time.sleep(0.5)  # polling a condition with a deadline
    raise RuntimeError(f"{url} never answered 200 from a cache")


def warm_files(targets: list[Target], files: list[dataset.File], settings: Settings) -> Samples:
    samples: Samples = {}
    for package, label, each in (("bench-mib", "1 MiB", 50), ("bench-big", "100 MiB", 2)):
        file = dataset.find(files, package)
        for target in targets:
            url = load.file_url(target.index_url, package, file.filename)
            warm_file(url)
            for _ in range(settings.repeats):
                rate, failed = load.curl_rate(url, processes=4, each=each)
                add(samples, f"{label} file, MiB/s", target.name, rate / MIB)
                add(samples, f"{label} file, failed", target.name, failed)
    return samples


# --- 3. cold page ------------------------------------------------------------------------------


def _get_seconds(*urls: str) -> float:
    """curl's time to the last byte of the slowest of `urls`, fetched at once (redirects followed).

    curl, not Python: the client's own overhead stays out of a ~50 ms measurement."""
    command = ["curl", "-sSfL", "--parallel", "--parallel-immediate", "--parallel-max", "50"]
    command += ["-H", "Accept: text/html", "-w", "%{time_total}\\n"]
    for url in urls:
        command += ["-o", "/dev/null", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return max(float(t) for t in done.stdout.split())


def cold_pages(
    up: Upstream, fan_out: list[Target], single: list[Target], settings: Settings, latency: float
) -> Samples:
    """The 10-source servers on `spread-N` (one file in each of 10 projects), the one-source
    peers on `bench-pkg-18N` (10 files in one project): pages each server never saw."""
    samples: Samples = {}
    reps = min(settings.repeats + 2, dataset.SPREAD_NAMES - 1)
    last = dataset.SPREAD_NAMES - 1
    set_latency(up, latency)
    try:
        named = [*((t, "spread-{}") for t in fan_out), *((t, "bench-pkg-18{}") for t in single)]
        for target, name in named:
            _get_seconds(f"{target.index_url}{name.format(last)}/")  # start-up, not measured
            for rep in range(reps):
                seconds = _get_seconds(f"{target.index_url}{name.format(rep)}/")
                add(samples, "cold page, ms", target.name, seconds * 1000)
        for rep in range(reps):
            direct = up.project_simple(dataset.MAIN_PROJECT) + f"bench-pkg-18{rep}"
            add(samples, "cold page, ms", "one round trip", _get_seconds(direct) * 1000)
            ten = [up.project_simple(p) + f"spread-{rep}" for p in dataset.SPREAD_PROJECTS]
            add(samples, "cold page, ms", "10 round trips at once", _get_seconds(*ten) * 1000)
    finally:
        set_latency(up, 0)
    return samples


# --- 4. thundering herd ------------------------------------------------------------------------


def herd(
    up: Upstream,
    targets: list[Target],
    files: list[dataset.File],
    settings: Settings,
    latency: float,
    clients: int = 50,
) -> Samples:
    samples: Samples = {}
    for rep in range(settings.herd_repeats):
        if rep and not _time_left(settings):
            break
        file = dataset.find(files, f"bench-herd-{rep}")
        for metric, by_server in herd_of(up, targets, file, latency, clients).items():
            for server, values in by_server.items():
                for value in values:
                    add(samples, metric, server, value)
    return samples


def herd_of(
    up: Upstream, targets: list[Target], file: dataset.File, latency: float, clients: int = 50
) -> Samples:
    """`clients` concurrent downloads of `file`, uncached, from each target in turn."""
    samples: Samples = {}
    set_latency(up, latency)
    try:
        prefix = f"/api/v4/projects/{file.project}/packages/pypi/files/{file.sha256}/"
        for target in targets:
            url = load.file_url(target.index_url, file.name, file.filename)
            before = upstream_count(up, prefix, whole=True)
            results, seconds = load.curl_many(url, clients, timeout=180)
            complete = sum(1 for r in results if r.status == 200 and r.size == file.size)
            after = upstream_count(up, prefix, whole=True)
            add(samples, "upstream downloads", target.name, after - before)
            add(samples, f"complete of {clients}", target.name, complete)
            add(samples, "time to last byte, s", target.name, seconds)
    finally:
        set_latency(up, 0)
    return samples


# --- 5. memory ---------------------------------------------------------------------------------


def _peak_rss(pid: int, action: Callable[[], None]) -> tuple[int, int]:
    """Peak (total over the process tree, largest process) while `action` runs."""
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            total, largest = tree_rss(pid)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], largest)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return peak[0], peak[1]


def _curl(*args: str) -> str:
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "300"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=320, check=False
    ).stdout


def _big_wheel(directory: Path, size: int) -> tuple[Path, str, str]:
    """A valid 1 GiB wheel written in constant memory: (path, sha256, md5)."""
    path = directory / "bench_upload-1.0.0-py3-none-any.whl"
    info = "bench_upload-1.0.0.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bench_upload/__init__.py", "")
        archive.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: bench-upload\nVersion: 1.0.0\n\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        with archive.open("bench_upload/padding.bin", "w", force_zip64=True) as member:
            chunk = b"\0" * (16 * MIB)
            for _ in range(size // len(chunk)):
                member.write(chunk)
        archive.writestr(f"{info}/RECORD", "")
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as handle:
        while block := handle.read(16 * MIB):
            sha256.update(block)
            md5.update(block)
    return path, sha256.hexdigest(), md5.hexdigest()


def memory(
    proxy: Target, peers: list[Target], files: list[dataset.File], settings: Settings
) -> Samples:
    samples: Samples = {}
    huge = dataset.find(files, "bench-huge")
    for target in [proxy, *peers]:
        pid = target.running.pid
        idle_total, idle_largest = tree_rss(pid)
        add(samples, "idle, MiB (all)", target.name, idle_total / MIB)
        add(samples, "idle, MiB (largest)", target.name, idle_largest / MIB)
        url = load.file_url(target.index_url, huge.name, huge.filename)
        for label in ("cold", "warm"):
            total, largest = _peak_rss(pid, lambda url=url: _curl("-L", url))
            add(samples, f"1 GiB download {label}, MiB (all)", target.name, total / MIB)
            add(samples, f"1 GiB download {label}, MiB (largest)", target.name, largest / MIB)
    upload_url = proxy.index_url.replace("/simple/", f"/upload/p{dataset.MAIN_PROJECT}/")
    probe = _curl("-X", "POST", "-u", "bench:bench", "-F", "x=y", upload_url)
    if probe in ("404", "405"):
        add(samples, "1 GiB upload, MiB (all)", proxy.name, float("nan"))
        return samples
    with tempfile.TemporaryDirectory(dir=settings.work) as directory:
        path, sha256, md5 = _big_wheel(Path(directory), 1024 * MIB)
        form = {
            ":action": "file_upload",
            "protocol_version": "1",
            "name": "bench-upload",
            "version": "1.0.0",
            "filetype": "bdist_wheel",
            "pyversion": "py3",
            "metadata_version": "2.1",
            "sha256_digest": sha256,
            "md5_digest": md5,
        }
        args = ["-u", "bench:bench"]
        for key, value in form.items():
            args += ["-F", f"{key}={value}"]
        args += ["-F", f"content=@{path};type=application/octet-stream", upload_url]
        status: list[str] = []
        total, largest = _peak_rss(proxy.running.pid, lambda: status.append(_curl(*args)))
        print(f"  upload answered HTTP {status[0]}", file=sys.stderr)
        if status[0].startswith("2"):
            add(samples, "1 GiB upload, MiB (all)", proxy.name, total / MIB)
            add(samples, "1 GiB upload, MiB (largest)", proxy.name, largest / MIB)
        else:
            add(samples, "1 GiB upload, MiB (all)", proxy.name, float("nan"))
    return samples


# --- 6. real clients ---------------------------------------------------------------------------


def install(
    client: str, index_url: str, packages: list[str], home: Path, timeout: float = 300
) -> tuple[float, str]:
    """(seconds, what the client printed on stderr) of `client` (pip or uv) installing
    `packages` from `index_url` into an empty target under `home`, its cache off. Raises
    RuntimeError when the install fails."""
    target = home / "target"
    env = isolated_env(home)
    if client == "pip":
        command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url"]
    else:
        command = [uv_binary(), "pip", "install", "--no-cache", "--python", sys.executable]
        command += ["--index-url"]
    command += [index_url, "--target", str(target), *packages]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{client} install from {index_url} failed:\n{done.stderr[-2000:]}")
    return elapsed, done.stderr


def _install(client: str, index_url: str, packages: list[str], home: Path) -> float:
    return install(client, index_url, packages, home)[0]


def installs(
    up: Upstream, targets: list[Target], settings: Settings, latency: float, count: int = 30
) -> Samples:
    """Cold (names this server never served) then warm (same names, client caches empty)."""
    samples: Samples = {}
    set_latency(up, latency)
    try:
        _installs(targets, settings, count, samples)
    finally:
        set_latency(up, 0)
    return samples


TREE = f"install a tree of {dataset.TREE_SIZE}"


def _installs(targets: list[Target], settings: Settings, count: int, samples: Samples) -> None:
    group = tree = 0
    for client in ("uv", "pip"):
        for rep in range(settings.install_repeats):
            if rep and not _time_left(settings):
                break
            packages = [dataset.package_name(group * count + i) for i in range(count)]
            group += 1
            # a dependency tree the client discovers level by level (a fresh one each time)
            top = dataset.tree_top(tree % dataset.TREES)
            tree += 1
            for what, asked in ((f"install {count}", packages), (TREE, [top])):
                for target in targets:
                    for label in ("cold", "warm"):
                        with tempfile.TemporaryDirectory(dir=settings.work) as home:
                            seconds = _install(client, target.index_url, asked, Path(home))
                        add(samples, f"{client} {what}, {label}, s", target.name, seconds)


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # NaN: not measured
    return statistics.median(clean) if clean else float("nan")


# --- 7. long histories -------------------------------------------------------------------------

_HISTORIES = (  # (row label, package name)
    ("2,000 versions", "bench-nightly"),
    ("10,000 files", "bench-wide"),
    ("a short name 2,500 others contain", dataset.SHORT_NAME),
)


def _gitlab_count(up: Upstream, pattern: str, until: float | None = None) -> int:
    params: dict[str, str | float] = {"pattern": pattern}
    if until is not None:
        params["until"] = until
    response = httpx2.get(f"{up.url}/_bench/count", params=params, timeout=10)
    return int(response.json()["count"])


def _page_requests(up: Upstream, until: float | None = None) -> int:
    """Simple pages and Packages API listings of the long histories' project that had arrived
    by `until` (time.monotonic(): the double's clock too)."""
    base = f"/api/v4/projects/{dataset.VERSIONS_PROJECT}/packages"
    return _gitlab_count(up, rf"{base}(/pypi/simple/.*)?", until)


def _json_page(target: Target, name: str) -> dict:
    url = f"{target.index_url}{name}/"
    return httpx2.get(url, headers={"Accept": load.JSON_ACCEPT}, timeout=60).json()


def _seconds_until(check: Callable[[], bool], limit: float) -> float:
    """Seconds until `check()` holds, polled every 0.2 s; NaN past `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)  # polling a condition with a deadline
    return float("nan")


def _details_exact(up: Upstream, target: Target, samples: Samples, settings: Settings) -> None:
    """This proxy fills PEP 700 details in behind the cold page: how soon they are exact, and
    the package_files calls that took (one per version)."""
    name = "bench-nightly"

    def newest_exact() -> bool:
        files = _json_page(target, name)["files"]
        newest = max(files, key=lambda f: int(f["filename"].split("-")[1].rsplit(".", 1)[1]))
        return "size" in newest

    add(samples, "newest version's size known, s", target.name, _seconds_until(newest_exact, 60))
    every = float("nan")
    if _time_left(settings):
        limit = max(0.0, min(150.0, settings.deadline - time.monotonic()))
        every = _seconds_until(
            lambda: _json_page(target, name)["meta"]["api-version"] == "1.1", limit
        )
    add(samples, "every version's size known, s", target.name, every)
    calls = _gitlab_count(
        up, rf"/api/v4/projects/{dataset.VERSIONS_PROJECT}/packages/\d+/package_files"
    )
    add(samples, "package_files calls by then (background)", target.name, calls)


class _Probe:
    """load.LoopLag for this proxy (its /healthz), nothing for a peer; the longest wait in ms."""

    def __init__(self, target: Target) -> None:
        base = target.index_url.removesuffix("simple/")
        self.lag = load.LoopLag(f"{base}healthz")
        self.ms = float("nan")

    def __enter__(self) -> "_Probe":
        self.lag.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lag.__exit__(*exc)
        self.ms = self.lag.longest * 1000


class _NoProbe:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _lag_probe(target: Target, proxy: Target, name: str) -> "_Probe | _NoProbe":
    return _Probe(target) if target is proxy and name == "bench-wide" else _NoProbe()


def _warm_big_page(target: Target, proxy: Target, name: str, label: str, samples: Samples) -> None:
    """The big project's page again and again (HTML, then JSON), one request at a time: the
    median time, and for this proxy the longest its event loop was blocked meanwhile."""
    url = f"{target.index_url}{name}/"
    probe = _lag_probe(target, proxy, name)
    times = []
    with probe:
        for n in range(10):
            accept = load.JSON_ACCEPT if n % 2 else "text/html"
            started = time.monotonic()
            httpx2.get(url, headers={"Accept": accept}, timeout=60).raise_for_status()
            times.append(time.monotonic() - started)
    add(samples, f"warm page, {label}, ms", target.name, statistics.median(times) * 1000)
    if isinstance(probe, _Probe):
        add(samples, f"event loop blocked, warm {label}, max ms", target.name, probe.ms)


def long_histories(
    up: Upstream, proxy: Target, peers: list[Target], settings: Settings, latency: float
) -> Samples:
    """Cold pages of names with thousands of versions, a first pip install of one, the warm page;
    for this proxy also how soon the exact details follow and what they cost."""
    samples: Samples = {}
    set_latency(up, latency)
    try:
        for target in [proxy, *peers]:
            for number, (label, name) in enumerate(_HISTORIES):
                before = _page_requests(up)
                probe = _lag_probe(target, proxy, name)
                with probe:
                    seconds = _get_seconds(f"{target.index_url}{name}/")
                answered = time.monotonic()  # background requests after this are not counted
                if isinstance(probe, _Probe):
                    blocked = f"event loop blocked, cold {label}, max ms"
                    add(samples, blocked, target.name, probe.ms)
                add(samples, f"cold page, {label}, ms", target.name, seconds * 1000)
                asked = _page_requests(up, answered) - before
                add(samples, f"cold page, {label}, GitLab requests", target.name, asked)
                if number == 0 and target is proxy:
                    _details_exact(up, target, samples, settings)
                if number == 1:  # the big project: warm, one client after another
                    _warm_big_page(target, proxy, name, label, samples)
                if number == 0:
                    url = f"{target.index_url}{name}/"
                    load.wrk(url, connections=16, seconds=1)  # every worker has it
                    warm = load.wrk(url, connections=16, seconds=settings.seconds)
                    add(
                        samples,
                        "warm page, 2,000 versions, req/s",
                        target.name,
                        warm.requests_per_s,
                    )
            with tempfile.TemporaryDirectory(dir=settings.work) as home:
                seconds = _install("pip", target.index_url, ["bench-first"], Path(home))
            add(samples, "first pip install, 2,000 versions, s", target.name, seconds)
    finally:
        set_latency(up, 0)
    return samples
