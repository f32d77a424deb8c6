"""Each upstream's reachability and whether this worker's connection pools get requests out, as
the transport reports them: an `UpstreamObserver` the services own and hand to the transport.

Reachability is learnt from the real upstream calls, never from probes of its own. Each worker
keeps its view in memory and, when a source changes state (or at most every few seconds while it
stays the same), writes it to a small file per worker in the runtime directory of its `serve`
(gitlab_pypi_proxy.runtime_dir, not on the cache disk) in a worker thread, so that any worker
answering `/readyz` or the status page reports what all of them saw. A stalled worker rewrites its
file every few seconds; a stall older than that is a worker that is gone."""

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("proxy.upstream")

# A source is "up" or "down" by its latest answer while that answer is this recent.
RECENT_SECONDS = 600.0
_SHARE_EVERY = 5.0
_STALL_FRESH = 3 * _SHARE_EVERY  # a shared stall not rewritten for this long: its worker is gone


@dataclass
class SourceState:
    last_ok: float | None = None
    last_failure: float | None = None
    reason: str = ""
    upstream: str = ""  # host:port it was last asked at

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
            upstream=self.upstream or other.upstream,
        )

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state(now),
            "last_ok": self.last_ok,
            "last_failure": self.last_failure,
            "reason": self.reason or None,
            "upstream": self.upstream or None,
        }


class UpstreamHealth:
    """This worker's view, shared through files in `directory` (None: not shared)."""

    def __init__(self, directory: Path | None = None) -> None:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.sources: dict[str, SourceState] = {}
        self._announced: dict[str, str] = {}  # source → the state last logged (not shared)
        self._announcer: ThreadPoolExecutor | None = None
        self._stalled: dict[str, str] = {}  # pool → why it gets no request out
        self._written = 0.0
        self._written_states: tuple[dict[str, str], str | None] | None = None

    # --- the transport's observer -------------------------------------------------------------

    def request_done(
        self,
        source: str,
        status: int | None,
        reason: str = "",
        *,
        timeout: bool = False,
        upstream: str = "",
    ) -> None:
        """One upstream call: an HTTP answer below 500 means the source is reachable, unless
        it comes with a reason (the proxy's own token refused)."""
        state = self.sources.get(source)
        if state is None:
            state = self.sources[source] = SourceState()
        now = time.time()
        if upstream:
            state.upstream = upstream
        if status is not None and status < 500 and not reason:
            state.last_ok = now
            self._announce(source, "up", state)
        else:
            state.last_failure = now
            state.reason = reason or f"HTTP {status} from {upstream or source}"
            self._announce(source, "down", state)
        self._share(now)

    def _announce(self, source: str, now_is: str, state: SourceState) -> None:
        """One log line per change of a source's state: down (a warning naming the reason), up
        again (a warning: the outage is over), up at first (info). The workers of one `serve`
        log each change once, whichever sees it: every call's outcome is compared with the state
        last logged, kept in a small locked file beside their views, in this worker's one
        announcing thread (in order, off the event loop)."""
        line = (source, now_is, state.reason, state.upstream or "?")
        if self.directory is None:
            before = self._announced.get(source)
            self._announced[source] = now_is
            if before != now_is:
                _log_change(before, *line)
            return
        path = self.directory / _ANNOUNCED
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nobody to keep waiting
            _log_change(_shared_change(path, source, now_is), *line)
            return
        if self._announcer is None:
            self._announcer = ThreadPoolExecutor(1, thread_name_prefix="source-states")
        loop.run_in_executor(
            self._announcer, lambda: _log_change(_shared_change(path, source, now_is), *line)
        )

    def pool_stalled(self, pool: str, reason: str | None) -> None:
        """Whether one of this worker's upstream pools is stalled (and why), or None if not."""
        if reason is None:
            self._stalled.pop(pool, None)
        else:
            self._stalled[pool] = reason
        self._share(time.time())

    # --- sharing ------------------------------------------------------------------------------

    def _stall(self) -> str | None:
        return "; ".join(self._stalled.values()) or None

    def _share(self, now: float) -> None:
        if self.directory is None:
            return
        states = ({name: s.state(now) for name, s in self.sources.items()}, self._stall())
        if states == self._written_states and now - self._written < _SHARE_EVERY:
            return
        self._written, self._written_states = now, states
        snapshot = json.dumps(
            {
                "written": now,
                "stalled": self._stall(),
                "sources": {name: asdict(s) for name, s in self.sources.items()},
            }
        )
        path = self.directory / f"{os.getpid()}.json"
        with contextlib.suppress(RuntimeError):  # no running loop: nobody to share with
            asyncio.get_running_loop().run_in_executor(None, _write, path, snapshot)

    def read_shared(self) -> tuple[dict[str, SourceState], list[str]]:
        """Every worker's view: the sources' states merged, and the stalls of live workers
        (blocking: reads a few small files)."""
        merged = {name: SourceState(**asdict(s)) for name, s in self.sources.items()}
        stalls = [stall] if (stall := self._stall()) else []
        now = time.time()
        for path in self.directory.glob("*.json") if self.directory else ():
            if path.stem == str(os.getpid()):
                continue  # this worker's own view is in memory, newer than its file
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
                snapshot = json.loads(path.read_text())
                for name, fields in snapshot["sources"].items():
                    merged[name] = merged.get(name, SourceState()).merge(SourceState(**fields))
                if snapshot["stalled"] and now - snapshot["written"] < _STALL_FRESH:
                    stalls.append(str(snapshot["stalled"]))
        return merged, stalls

    async def source_states(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Each source's state as every worker saw it (reads a few small files in a thread)."""
        known, _ = await asyncio.to_thread(self.read_shared)
        now = time.time()
        return {name: known.get(name, SourceState()).as_json(now) for name in names}


_ANNOUNCED = "announced.state"  # source → the state last logged by any worker


def _shared_change(path: Path, source: str, now_is: str) -> str | bool | None:
    """Note `now_is` as the source's logged state in the file at `path`: the state noted
    before, or False when it was `now_is` already (another worker logged this change)."""
    try:
        with path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            handle.seek(0)
            try:
                states = json.loads(handle.read() or b"{}")
            except ValueError:
                states = {}
            previous = states.get(source)
            if previous == now_is:
                return False
            states[source] = now_is
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(states).encode())
            return previous
    except OSError:
        return None  # cannot share: this worker logs what it saw


def _log_change(
    previous: str | bool | None, source: str, now_is: str, reason: str, where: str
) -> None:
    if previous is False:
        return
    if now_is == "down":
        log.warning("source %s is down: %s", source, reason)
    elif previous == "down":
        log.warning("source %s is up again: %s answers", source, where)
    else:
        log.info("source %s is up: %s answers", source, where)


def _write(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)
