"""Prometheus metrics: the metric objects every layer counts into (`/metrics` is
gitlab_pypi_proxy.http.metrics_endpoint).

`serve` points PROMETHEUS_MULTIPROC_DIR at a directory of its own (gitlab_pypi_proxy.runtime_dir,
never on the cache disk) before this module is first imported: every worker then counts into its own
memory-mapped files (no system call per increment) and a scrape sums them all. Each process writes
its files out in full before they are mapped (`_write_out`): a mapped page that no disk block backs
yet would be a SIGBUS, not an error, once its file system is full."""

import contextlib
import os
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)

from gitlab_pypi_proxy.runtime_dir import MULTIPROC_ENV

PREFIX = "gitlab_pypi_proxy_"
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

REQUESTS = Counter(PREFIX + "http_requests", "HTTP requests answered", ["route", "status"])
LATENCY = Histogram(
    PREFIX + "http_request_duration_seconds",
    "Time from request to the last byte of the response",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CACHE = Counter(
    PREFIX + "cache_lookups",
    "Cache lookups by cache and outcome (hit, miss, stale): a file request's lookup of the "
    "file; a source's record of a page or project list (a page rendered from the memo looks "
    "up none)",
    ["cache", "outcome"],
)
SERVED_BYTES = Counter(
    PREFIX + "served_file_bytes",
    "Distribution file bytes sent, by origin (cache, upstream)",
    ["origin"],
)
UPSTREAM = Counter(
    PREFIX + "upstream_requests",
    "Upstream HTTP requests by source and outcome (2xx..5xx, timeout, error)",
    ["source", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    PREFIX + "upstream_request_duration_seconds",
    "Time from an upstream request to its answer's headers, by source",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPLOADS = Counter(
    PREFIX + "uploads",
    "Uploads forwarded, by target source and outcome (GitLab's HTTP status; timeout or error "
    "when it could not be reached)",
    ["source", "outcome"],
)
UPSTREAM_WAITING = Gauge(
    PREFIX + "upstream_requests_waiting",
    "Upstream requests waiting for a connection from the pool",
    multiprocess_mode="livesum",
)
UPSTREAM_HOLDING = Gauge(
    PREFIX + "upstream_requests_active",
    "Upstream requests holding a connection (sending, or reading the answer)",
    multiprocess_mode="livesum",
)
UPSTREAM_POOL_TIMEOUTS = Counter(
    PREFIX + "upstream_pool_timeouts", "Upstream requests that found no free connection in time"
)
UPSTREAM_POOL_STALLED = Gauge(
    PREFIX + "upstream_pool_stalled",
    "1 while a worker's upstream connection pool gets no request out (see /readyz)",
    multiprocess_mode="livemax",
)
UPSTREAM_POOL_REPLACEMENTS = Counter(
    PREFIX + "upstream_pool_replacements", "Stalled upstream connection pools replaced by new ones"
)
UPSTREAM_STOPPED = Counter(
    PREFIX + "upstream_stopped",
    "Upstream requests stopped by a bound, by source and bound: file_hosts (a host the source "
    "may not send the proxy to), max_page_size, deadline (a page not whole in time), progress "
    "(a file arriving too slowly), busy (every connection of the source's share in use)",
    ["source", "bound"],
)
STALE_ANSWERS = Counter(
    PREFIX + "stale_answers",
    "Index answers (pages, project lists) served stale because their source could not answer, "
    "by source; the outage itself is one log line when it begins and one when it ends",
    ["source"],
)
REQUEST_HEAD_TIMEOUTS = Counter(
    PREFIX + "request_head_timeouts",
    "Client connections closed for sending no whole request head within [server] header_timeout",
)
DESCRIPTORS_EXHAUSTED = Gauge(
    PREFIX + "descriptors_exhausted",
    "1 while a worker has no file descriptor left (RLIMIT_NOFILE): new connections are dropped",
    multiprocess_mode="livemax",
)
EVICTIONS = Counter(PREFIX + "cache_evictions", "Files evicted from the file cache past max_size")
JOINS = Counter(
    PREFIX + "single_flight_joins",
    "Requests that joined an upstream fetch already running instead of starting one",
    ["cache"],
)
POLICY = Counter(
    PREFIX + "policy_files",
    "What the supply-chain guard did: file listings held back by the cooldown (held) or yanked "
    "for an advisory (yanked) on the pages it built, file requests it refused (refused)",
    ["verdict"],
)
POLICY_RULES = Counter(
    PREFIX + "policy_refusals",
    "File requests the supply-chain guard refused, by rule: a [policy] deny entry as written, "
    "malicious, min_age, unknown_age, quarantine, include/exclude",
    ["rule"],
)
SHARED_FAILURES = Counter(
    PREFIX + "shared_store_failures",
    "Calls to a shared store (s3: the bucket, redis: the cluster's Redis) that failed; the"
    " replica carried on without it",
    ["store"],
)
DROPPED_RECORDS = Counter(
    PREFIX + "dropped_records",
    "Stored records that could not be read (malformed, or of another format) and were dropped,"
    " by store: index records, pep700 details, uploads, metadata, provenance",
    ["store"],
)
SHARED_DOWN = Gauge(
    PREFIX + "shared_store_down",
    "1 while a worker finds a shared store (s3, redis) unreachable and carries on alone",
    ["store"],
    multiprocess_mode="livemax",
)

# Children resolved once: the warm page path pays one increment, not a label lookup.
PAGE_HIT = CACHE.labels("page", "hit")
PAGE_MISS = CACHE.labels("page", "miss")
PAGE_STALE = CACHE.labels("page", "stale")
FILE_HIT = CACHE.labels("file", "hit")
FILE_MISS = CACHE.labels("file", "miss")
PAGE_JOIN = JOINS.labels("page")
FILE_JOIN = JOINS.labels("file")
POLICY_HELD = POLICY.labels("held")
POLICY_YANKED = POLICY.labels("yanked")
POLICY_REFUSED = POLICY.labels("refused")
for _store in ("s3", "redis"):  # exposed at 0 on one machine too: the dashboard's panels
    SHARED_FAILURES.labels(_store)
    SHARED_DOWN.labels(_store)


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


def registry() -> CollectorRegistry:
    """Every worker's metrics (multiprocess mode), else this process's."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    target = CollectorRegistry()
    multiprocess.MultiProcessCollector(target)
    return target


def policy_counts() -> dict[str, float]:
    """The guard's counts per verdict, summed over every worker (blocking: a thread)."""
    counts: dict[str, float] = {}
    for family in registry().collect():
        if family.name == PREFIX + "policy_files":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    verdict = sample.labels["verdict"]
                    counts[verdict] = counts.get(verdict, 0.0) + sample.value
    return counts


def policy_rule_counts() -> dict[str, float]:
    """File requests refused per rule, summed over every worker (blocking: a thread)."""
    counts: dict[str, float] = {}
    for family in registry().collect():
        if family.name == PREFIX + "policy_refusals":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    rule = sample.labels["rule"]
                    counts[rule] = counts.get(rule, 0.0) + sample.value
    return counts


def samples() -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample, summed over the workers, by sample name (`..._total`, `..._sum`, ...):
    (labels, value) pairs (blocking: reads the workers' files, in a thread)."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry().collect():
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found
