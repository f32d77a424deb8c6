"""Liveness and readiness: `/healthz`, `/readyz`, and each source's reachability.

Reachability is learnt from the real upstream calls (proxy.upstream reports every outcome here),
never from probes of its own. Each worker process knows what its own calls saw.
"""

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from proxy import metrics

# A source is "up" while its last answer is this recent; older answers say "unknown".
RECENT_SECONDS = 600.0


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

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state(now),
            "last_ok": self.last_ok,
            "last_failure": self.last_failure,
            "reason": self.reason or None,
        }


SOURCES: dict[str, SourceState] = {}


def observe_upstream(
    source: str, status: int | None, reason: str = "", *, timeout: bool = False
) -> None:
    """Record one upstream call: an HTTP answer below 500 means the source is reachable."""
    metrics.UPSTREAM.labels(source, metrics.upstream_outcome(status, timeout)).inc()
    state = SOURCES.get(source)
    if state is None:
        state = SOURCES[source] = SourceState()
    if status is not None and status < 500:
        state.last_ok = time.time()
    else:
        state.last_failure = time.time()
        state.reason = reason or f"HTTP {status}"


def source_states(names: list[str], now: float | None = None) -> dict[str, dict[str, Any]]:
    now = time.time() if now is None else now
    return {name: SOURCES.get(name, SourceState()).as_json(now) for name in names}


def _probe_writable(directory: Path) -> str | None:
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".healthz-"):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


async def healthz(request: Request) -> Response:
    directory = request.app.state.services.config.cache.directory
    problem = await asyncio.to_thread(_probe_writable, directory)
    if problem is not None:
        return PlainTextResponse(f"cache directory not writable: {problem}\n", status_code=503)
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    services = request.app.state.services
    offline = services.config.cache.offline
    names = [s.name for s in services.index.sources + services.index.public]
    states = source_states(names)
    cached_pages = await asyncio.to_thread(len, services.pages)
    down = [name for name, s in states.items() if s["state"] == "down"]
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
    body = {
        "ready": ready,
        "mode": mode,
        "config": "loaded",
        "offline_serving_possible": can_serve_cached,
        "cached_index_entries": cached_pages,
        "pid": os.getpid(),
        "sources": states,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
