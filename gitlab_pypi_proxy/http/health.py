"""Liveness and readiness: `/healthz`, `/readyz`, each source's reachability, and whether the
upstream connection pool gets requests out (gitlab_pypi_proxy.sources.upstream_health).

`/readyz` is 503 "not ready" while any worker's pool stalls, while a worker is out of file
descriptors (it drops new connections; its answer reads no file), or when upstreams are down and
nothing is cached; it stays 200 "degraded" while the cache serves through an upstream outage. A
cache directory that cannot be written fails neither probe: the proxy still serves, and a
restart would neither free the disk nor make it writable, only cut what is in flight. Both
probes say it instead, as do the status page and `gitlab_pypi_proxy_cache_writable`, the one to
alert on."""

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from gitlab_pypi_proxy.descriptors import WATCH as DESCRIPTORS
from gitlab_pypi_proxy.http.shared_state import shared_problems, shared_state
from gitlab_pypi_proxy.sources.upstream_health import SourceState
from gitlab_pypi_proxy.storage.writable import CacheState, writes_for

R = TypeVar("R")

# The probes' blocking reads run on a thread of their own: behind big pages' work in the default
# executor, a probe would wait seconds for a thread, and a kubelet take that for a hang.
_PROBE_THREAD = ThreadPoolExecutor(1, thread_name_prefix="probe")


async def _in_probe_thread(work: Callable[[], R]) -> R:
    return await asyncio.get_running_loop().run_in_executor(_PROBE_THREAD, work)


async def cache_state(request: Request) -> CacheState:
    """Whether the cache directory takes writes (a statvfs, in the probes' thread)."""
    directory = request.app.state.services.config.cache.directory
    return await _in_probe_thread(writes_for(directory).state)


async def healthz(request: Request) -> Response:
    """Liveness: 200 while this process answers, whatever the cache directory's state."""
    out_of_descriptors = DESCRIPTORS.exhaustion()
    if out_of_descriptors is not None:  # the cache probe would fail for want of one too
        return PlainTextResponse(f"ok, {out_of_descriptors}\n")
    cache = await cache_state(request)
    return PlainTextResponse("ok\n" if cache.writable else f"ok, {cache.describe()}\n")


@dataclass(frozen=True)
class Readiness:
    """What `/readyz` answers, and the status page shows."""

    ready: bool
    mode: str  # the one line: "online", "degraded: ...", "not ready: ...", "offline: ..."
    body: dict[str, Any]

    @property
    def state(self) -> str:
        """ready, degraded (serving, not all of it), or not ready."""
        if not self.ready:
            return "not ready"
        return "ready" if self.mode == "online" else "degraded"


async def readiness(request: Request) -> Readiness:
    services = request.app.state.services
    out_of_descriptors = DESCRIPTORS.exhaustion()
    if out_of_descriptors is not None:
        mode = f"not ready: {out_of_descriptors}"
        body = {"ready": False, "mode": mode, "config": "loaded", "pid": os.getpid()}
        return Readiness(False, mode, body | {"descriptors": DESCRIPTORS.as_json()})
    offline = services.config.cache.offline
    names = services.source_names
    known, stalls = await _in_probe_thread(services.health.read_shared)
    states = {name: known.get(name, SourceState()).as_json(time.time()) for name in names}
    cached_pages = await _in_probe_thread(lambda: len(services.stores.pages))
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
    shared = shared_state(services.stores)
    for problem in shared_problems(shared):  # still ready, as for the cache directory
        mode = "degraded: " if mode == "online" else f"{mode}; "
        mode += problem
    body = {
        "ready": ready,
        "mode": mode,
        "config": "loaded",
        "offline_serving_possible": can_serve_cached,
        "cached_index_entries": cached_pages,
        "cache": cache.as_json(),
        "shared": shared,
        "upstream_pool": {"stalled": bool(stalls), "reason": stalls[0] if stalls else None},
        "descriptors": DESCRIPTORS.as_json(),
        "pid": os.getpid(),
        "sources": states,
    }
    return Readiness(ready, mode, body)


async def readyz(request: Request) -> Response:
    answer = await readiness(request)
    return JSONResponse(answer.body, status_code=200 if answer.ready else 503)
