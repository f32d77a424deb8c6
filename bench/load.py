"""The load generators: wrk (throughput and latency percentiles), curl (many concurrent
downloads), and a link lookup on each server's own page."""

import re
import subprocess
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx2

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}
_TIME = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass
class WrkResult:
    requests_per_s: float
    bytes_per_s: float
    p50: float  # seconds
    p99: float
    errors: int  # socket errors and non-2xx/3xx answers


def _duration(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _TIME[unit]


def wrk(
    url: str, *, connections: int, seconds: float, threads: int = 2, accept: str | None = None
) -> WrkResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    command += ["--timeout", "30s"]
    if accept:
        command += ["-H", f"Accept: {accept}"]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    number, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()
    percentiles = dict(re.findall(r"^\s+(50|99)\.000%\s+(\S+)", out, re.M))
    if not percentiles:
        percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return WrkResult(
        rate,
        float(number) * _UNITS[unit],
        _duration(percentiles["50"]),
        _duration(percentiles["99"]),
        errors,
    )


@dataclass
class Download:
    status: int
    size: int
    seconds: float


def curl_many(url: str, count: int, timeout: float) -> tuple[list[Download], float]:
    """`count` curl processes at once (redirects followed); (their results, time to last byte)."""
    command = ["curl", "-sL", "-o", "/dev/null", "--max-time", f"{timeout:g}"]
    command += ["-w", "%{http_code} %{size_download} %{time_total}", url]
    started = time.monotonic()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    results = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=timeout + 10)
            status, size, seconds = out.split()
            results.append(Download(int(status), int(size), float(seconds)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results, time.monotonic() - started


def curl_rate(url: str, processes: int, each: int, timeout: float = 120) -> tuple[float, int]:
    """`processes` curls at once, each downloading `url` `each` times over one connection:
    (bytes per second over the wall time, downloads that did not answer 200)."""
    command = ["curl", "-s", "--max-time", f"{timeout:g}", "-w", "%{http_code} %{size_download}\\n"]
    for _ in range(each):
        command += ["-o", "/dev/null", url]
    started = time.monotonic()
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    total, failed = 0, 0
    try:
        for process in running:
            out, _ = process.communicate(timeout=timeout + 10)
            for line in out.splitlines():
                status, size = line.split()
                total += int(size)
                failed += status != "200"
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    return total / (time.monotonic() - started), failed


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def file_url(index_url: str, name: str, filename: str) -> str:
    """The absolute URL the server's own HTML page gives for `filename` (no fragment)."""
    page_url = f"{index_url}{name}/"
    response = httpx2.get(page_url, follow_redirects=True, timeout=120)
    response.raise_for_status()
    parser = _Links()
    parser.feed(response.text)
    for href in parser.hrefs:
        if href.split("#")[0].rsplit("/", 1)[-1] == filename:
            return urljoin(str(response.url), href.split("#")[0])
    raise RuntimeError(f"{page_url} does not list {filename}")


class LoopLag:
    """A loop-lag probe from outside: while in use, a thread asks `url` (a trivial route) over
    `connections` keep-alive connections in turn, one request at a time, and keeps the longest
    answer. A connection stays with the worker that accepted it, so each worker is probed; a
    request that arrives while a worker's event loop is busy with one long step waits for it."""

    def __init__(self, url: str, connections: int = 8) -> None:
        self.url, self.connections = url, connections
        self.longest = 0.0  # seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def __enter__(self) -> "LoopLag":
        self._clients = [httpx2.Client(timeout=30) for _ in range(self.connections)]
        for client in self._clients:
            client.get(self.url)  # connected before the work starts
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for client in self._clients:
            client.close()

    def _probe(self) -> None:
        while not self._stop.is_set():
            for client in self._clients:
                started = time.monotonic()
                client.get(self.url)
                self.longest = max(self.longest, time.monotonic() - started)
            self._stop.wait(0.002)
