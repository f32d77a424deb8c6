"""Liveness and readiness: `/healthz`, `/readyz`, and each source's reachability.

Reachability is learnt from the real upstream calls (proxy.upstream reports every outcome here),
never from probes of its own. Each worker keeps its view in memory and, when a source changes
state (or at most every few seconds while it stays the same), writes it to a small file per
worker in the runtime directory of its `serve` (proxy.runtime_dir, not on the cache disk) in a
worker thread, so that any worker answering `/readyz` or the status page reports what all of
them saw.

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
from proxy.cache.writable import CacheState, writes_for

# A source is "up" or "down" by its latest answer while that answer is this recent.
RECENT_SECONDS = 600.0
_SHARE_EVERY = 5.0


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
    written_states: dict[str, str] | None = None


SOURCES: dict[str, SourceState] = {}
_shared = _Shared()


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


def _share(now: float) -> None:
    if _shared.directory is None:
        return
    states = {name: s.state(now) for name, s in SOURCES.items()}
    if states == _shared.written_states and now - _shared.written < _SHARE_EVERY:
        return
    _shared.written, _shared.written_states = now, states
    snapshot = json.dumps({name: asdict(s) for name, s in SOURCES.items()})
    path = _shared.directory / f"{os.getpid()}.json"
    with contextlib.suppress(RuntimeError):  # no running loop: nobody to share with
        asyncio.get_running_loop().run_in_executor(None, _write, path, snapshot)


def _write(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)


def _read_shared(directory: Path | None) -> dict[str, SourceState]:
    merged = {name: SourceState(**asdict(s)) for name, s in SOURCES.items()}
    for path in directory.glob("*.json") if directory else ():
        with contextlib.suppress(OSError, ValueError, TypeError):
            for name, fields in json.loads(path.read_text()).items():
                merged[name] = merged.get(name, SourceState()).merge(SourceState(**fields))
    return merged


async def source_states(names: list[str]) -> dict[str, dict[str, Any]]:
    """Each source's state as every worker saw it (reads a few small files in a thread)."""
    known = await asyncio.to_thread(_read_shared, _shared.directory)
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
    states = await source_states(names)
    cached_pages = await asyncio.to_thread(len, services.pages)
    down = [name for name, s in states.items() if s["state"] == "down"]
    cache = await cache_state(request)
    can_serve_cached = cached_pages > 0
    if offline:
        ready, mode = can_serve_cached, "offline: serving only what is cached"
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
        "pid": os.getpid(),
        "sources": states,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
