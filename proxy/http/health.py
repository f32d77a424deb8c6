"""Liveness and readiness: `/healthz`, `/readyz`, each source's reachability, and whether the
upstream connection pool gets requests out.

Reachability is learnt from the real upstream calls (proxy.sources.upstream reports every outcome
here), never from probes of its own; a stalled pool is reported by proxy.sources.upstream_pool. Each
worker keeps its view in memory and, when a source changes state (or at most every few seconds while
it stays the same), writes it to a small file per worker in the runtime directory of its `serve`
(proxy.runtime_dir, not on the cache disk) in a worker thread, so that any worker answering
`/readyz` or the status page reports what all of them saw. A stalled worker rewrites its file every
few seconds; a stall older than that is a worker that is gone.

`/readyz` is 503 "not ready" while any worker cannot get a request out to an upstream (its pool
stalled), or when upstreams are down and nothing is cached; it stays 200 "degraded" while a
plain upstream outage leaves the cache to serve.

A cache directory that cannot be written (full, read-only) fails neither probe: the proxy still
serves, cached files from disk and the rest streamed verified without keeping, and restarting it
would neither free the disk nor make it writable, only cut what is in flight (or, on a full
disk, fail to start again). Both say it instead, as do the status page and
`gitlab_pypi_proxy_cache_writable`, the one to alert on.
"""

import asyncio
import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from proxy import metrics
from proxy.storage.writable import CacheState, writes_for

# A source is "up" or "down" by its latest answer while that answer is this recent.
RECENT_SECONDS = 600.0
_SHARE_EVERY = 5.0
_STALL_FRESH = 3 * _SHARE_EVERY  # a shared stall not rewritten for this long: its worker is gone


@dataclass
class SourceState:
    last_ok: float | None = None
    last_failure: float | None = None
    reason: str = ""

    def state(self, now: float) -> str:
        latest = max(self.last_ok or 0.0, self.last_failure or 0.0)
        if not latest or now - latest > RECENT_SECONDS:
            return "unknown"
        return "up" if self.last_ok == latest else "down"

    def merge(self, other: "SourceState") -> "SourceState":
        failure = max(self.last_failure or 0.0, other.last_failure or 0.0) or None
        return SourceState(
            last_ok=max(self.last_ok or 0.0, other.last_ok or 0.0) or None,
            last_failure=failure,
            reason=self.reason if failure == self.last_failure else other.reason,
        )

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state(now),
            "last_ok": self.last_ok,
            "last_failure": self.last_failure,
            "reason": self.reason or None,
        }


@dataclass
class _Shared:
    directory: Path | None = None
    written: float = 0.0
    written_states: tuple[dict[str, str], str | None] | None = None


SOURCES: dict[str, SourceState] = {}
_shared = _Shared()
_stalled: dict[str, str] = {}  # pool → why it gets no request out, for this worker's stalled pools


def share_in(directory: Path | None) -> None:
    """Share this worker's view of the sources through files in `directory` (None: do not)."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    _shared.directory = directory


def observe_upstream(
    source: str, status: int | None, reason: str = "", *, timeout: bool = False
) -> None:
    """Record one upstream call: an HTTP answer below 500 means the source is reachable."""
    metrics.UPSTREAM.labels(source, metrics.upstream_outcome(status, timeout)).inc()
    state = SOURCES.get(source)
    if state is None:
        state = SOURCES[source] = SourceState()
    now = time.time()
    if status is not None and status < 500:
        state.last_ok = now
    else:
        state.last_failure = now
        state.reason = reason or f"HTTP {status}"
    _share(now)


def observe_pool(pool: str, stalled: str | None) -> None:
    """Record whether one of this worker's upstream pools is stalled (and why), or None if not."""
    if stalled is None:
        _stalled.pop(pool, None)
    else:
        _stalled[pool] = stalled
    _share(time.time())


def _stall() -> str | None:
    return "; ".join(_stalled.values()) or None


def _share(now: float) -> None:
    if _shared.directory is None:
        return
    states = ({name: s.state(now) for name, s in SOURCES.items()}, _stall())
    if states == _shared.written_states and now - _shared.written < _SHARE_EVERY:
        return
    _shared.written, _shared.written_states = now, states
    snapshot = json.dumps(
        {
            "written": now,
            "stalled": _stall(),
            "sources": {name: asdict(s) for name, s in SOURCES.items()},
        }
    )
    path = _shared.directory / f"{os.getpid()}.json"
    with contextlib.suppress(RuntimeError):  # no running loop: nobody to share with
        asyncio.get_running_loop().run_in_executor(None, _write, path, snapshot)


def _write(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)


def _read_shared(directory: Path | None) -> tuple[dict[str, SourceState], list[str]]:
    """Every worker's view: the sources' states merged, and the stalls of live workers."""
    merged = {name: SourceState(**asdict(s)) for name, s in SOURCES.items()}
    stalls = [stall] if (stall := _stall()) else []
    now = time.time()
    for path in directory.glob("*.json") if directory else ():
        if path.stem == str(os.getpid()):
            continue  # this worker's own view is in memory, newer than its file
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
            snapshot = json.loads(path.read_text())
            for name, fields in snapshot["sources"].items():
                merged[name] = merged.get(name, SourceState()).merge(SourceState(**fields))
            if snapshot["stalled"] and now - snapshot["written"] < _STALL_FRESH:
                stalls.append(str(snapshot["stalled"]))
    return merged, stalls


async def source_states(names: list[str]) -> dict[str, dict[str, Any]]:
    """Each source's state as every worker saw it (reads a few small files in a thread)."""
    known, _ = await asyncio.to_thread(_read_shared, _shared.directory)
    now = time.time()
    return {name: known.get(name, SourceState()).as_json(now) for name in names}


async def cache_state(request: Request) -> CacheState:
    """Whether the cache directory takes writes (a statvfs, in a thread)."""
    directory = request.app.state.services.config.cache.directory
    return await asyncio.to_thread(writes_for(directory).state)


async def healthz(request: Request) -> Response:
    """Liveness: 200 while this process answers, whatever the cache directory's state."""
    cache = await cache_state(request)
    return PlainTextResponse("ok\n" if cache.writable else f"ok, {cache.describe()}\n")


async def readyz(request: Request) -> Response:
    services = request.app.state.services
    offline = services.config.cache.offline
    names = [s.name for s in services.index.sources + services.index.public]
    known, stalls = await asyncio.to_thread(_read_shared, _shared.directory)
    states = {name: known.get(name, SourceState()).as_json(time.time()) for name in names}
    cached_pages = await asyncio.to_thread(len, services.pages)
    down = [name for name, s in states.items() if s["state"] == "down"]
    cache = await cache_state(request)
    can_serve_cached = cached_pages > 0
    if offline:
        ready, mode = can_serve_cached, "offline: serving only what is cached"
    elif stalls:
        ready = False
        mode = f"not ready: cannot get requests out to the upstreams: {stalls[0]}"
    elif not down:
        ready, mode = True, "online"
    else:
        ready = can_serve_cached
        mode = (
            f"degraded: {', '.join(down)} unreachable, serving from the cache"
            if ready
            else f"not ready: {', '.join(down)} unreachable and nothing is cached"
        )
    if not cache.writable:  # still ready: it serves all the same, only keeps nothing new
        mode = "degraded: " if mode == "online" else f"{mode}; "
        mode += cache.describe()
    body = {
        "ready": ready,
        "mode": mode,
        "config": "loaded",
        "offline_serving_possible": can_serve_cached,
        "cached_index_entries": cached_pages,
        "cache": cache.as_json(),
        "upstream_pool": {"stalled": bool(stalls), "reason": stalls[0] if stalls else None},
        "pid": os.getpid(),
        "sources": states,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
