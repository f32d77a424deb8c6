"""Prometheus metrics: the metric objects, one-line hooks for other modules, and `/metrics`.

`serve` points PROMETHEUS_MULTIPROC_DIR at a directory of its own (proxy.runtime_dir, never on
the cache disk) before this module is first imported: every worker then counts into its own
memory-mapped files (no system call per increment) and a scrape sums them all. Each process
writes its files out in full before they are mapped (`_write_out`): a mapped page that no disk
block backs yet would be a SIGBUS, not an error, once its file system is full.
"""

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from proxy.runtime_dir import MULTIPROC_ENV
from proxy.storage.writable import writes_for

_P = "gitlab_pypi_proxy_"
# Room for every series a process counts: a busy worker's histogram file uses ~30 KiB (a few
# hundred keys of ~200 bytes). prometheus_client would grow a file past this itself, sparsely.
_FILE_BYTES = 256 * 1024


def _write_out(directory: str | None) -> None:
    """Create this process's files for the metric kinds below, every byte written (zeros), so
    that prometheus_client finds them sized and backed and only maps them."""
    if not directory:
        return
    for kind in ("counter", "histogram"):  # prometheus_client's names: <kind>_<pid>.db
        path = Path(directory, f"{kind}_{os.getpid()}.db")
        try:
            with path.open("xb") as handle:
                handle.write(bytes(_FILE_BYTES))
        except FileExistsError:
            pass
        except OSError:  # no room even now: prometheus_client makes its own, sparse
            with contextlib.suppress(OSError):
                path.unlink()


_write_out(os.environ.get(MULTIPROC_ENV))

REQUESTS = Counter(_P + "http_requests", "HTTP requests answered", ["route", "status"])
LATENCY = Histogram(
    _P + "http_request_duration_seconds",
    "Time from request to the last byte of the response",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CACHE = Counter(
    _P + "cache_lookups",
    "Cache lookups by cache (page, file) and outcome (hit, miss, stale)",
    ["cache", "outcome"],
)
SERVED_BYTES = Counter(
    _P + "served_file_bytes",
    "Distribution file bytes sent, by origin (cache, upstream)",
    ["origin"],
)
UPSTREAM = Counter(
    _P + "upstream_requests",
    "Upstream HTTP requests by source and outcome (2xx..5xx, timeout, error)",
    ["source", "outcome"],
)
UPLOADS = Counter(
    _P + "uploads", "Uploads forwarded, by target source and outcome", ["source", "outcome"]
)
UPSTREAM_WAITING = Gauge(
    _P + "upstream_requests_waiting",
    "Upstream requests waiting for a connection from the pool",
    multiprocess_mode="livesum",
)
UPSTREAM_HOLDING = Gauge(
    _P + "upstream_requests_active",
    "Upstream requests holding a connection (sending, or reading the answer)",
    multiprocess_mode="livesum",
)
UPSTREAM_POOL_TIMEOUTS = Counter(
    _P + "upstream_pool_timeouts", "Upstream requests that found no free connection in time"
)
UPSTREAM_POOL_STALLED = Gauge(
    _P + "upstream_pool_stalled",
    "1 while a worker's upstream connection pool gets no request out (see /readyz)",
    multiprocess_mode="livemax",
)
UPSTREAM_POOL_REPLACEMENTS = Counter(
    _P + "upstream_pool_replacements", "Stalled upstream connection pools replaced by new ones"
)
EVICTIONS = Counter(_P + "cache_evictions", "Files evicted from the file cache past max_size")
JOINS = Counter(
    _P + "single_flight_joins",
    "Requests that joined an upstream fetch already running instead of starting one",
    ["cache"],
)

# Children resolved once: the warm page path pays one increment, not a label lookup.
PAGE_HIT = CACHE.labels("page", "hit")
PAGE_MISS = CACHE.labels("page", "miss")
PAGE_STALE = CACHE.labels("page", "stale")
FILE_HIT = CACHE.labels("file", "hit")
FILE_MISS = CACHE.labels("file", "miss")
PAGE_JOIN = JOINS.labels("page")
FILE_JOIN = JOINS.labels("file")


def forget_dead_workers() -> None:
    """Drop the live gauges (requests waiting, pool stalled) of workers that died without
    saying so: a worker uvicorn restarts calls this, else a dead one's last values stay summed."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        try:
            pid = int(path.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except (PermissionError, ValueError):
            pass  # alive but someone else's, or not a worker's file: not ours to judge


def upstream_outcome(status: int | None, timeout: bool = False) -> str:
    if status is None:
        return "timeout" if timeout else "error"
    return f"{status // 100}xx"


class CacheSizeCollector(Collector):
    """The file cache's entries and bytes, read from its index at scrape time, and whether the
    cache directory takes writes."""

    def __init__(self, entries: int, volume: int, writable: bool) -> None:
        self.entries, self.volume, self.writable = entries, volume, writable

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(_P + "file_cache_entries", "Files in the cache", value=self.entries)
        yield GaugeMetricFamily(
            _P + "file_cache_bytes", "Bytes of files on disk", value=self.volume
        )
        yield GaugeMetricFamily(
            _P + "cache_writable",
            "1 while the cache directory takes writes; 0 when full or read-only (files are "
            "then served without being kept)",
            value=int(self.writable),
        )


def registry() -> CollectorRegistry:
    """Every worker's metrics (multiprocess mode), else this process's."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    target = CollectorRegistry()
    multiprocess.MultiProcessCollector(target)
    return target


def cache_counts() -> dict[tuple[str, str], float]:
    """Cache lookups per (cache, outcome), summed over every worker (blocking: a thread)."""
    counts: dict[tuple[str, str], float] = {}
    for family in registry().collect():
        if family.name != _P + "cache_lookups":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["cache"], sample.labels["outcome"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def _scrape(entries: int, volume: int, writable: bool) -> bytes:
    sizes = CollectorRegistry()
    sizes.register(CacheSizeCollector(entries, volume, writable))
    return generate_latest(registry()) + generate_latest(sizes)


async def metrics_endpoint(request: Request) -> Response:
    services = request.app.state.services
    files, writes = services.files.entries, writes_for(services.config.cache.directory)
    entries, volume = await asyncio.to_thread(lambda: (len(files), files.volume()))
    state = await asyncio.to_thread(writes.state)
    body = await asyncio.to_thread(_scrape, entries, volume, state.writable)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
