"""What one upstream request may spend: connections, time and memory, each with a bound whose
breach is a one-line error naming the source and a metric (`upstream_stopped`).

- Connections: each source gets an equal share of the worker's pool (`Slots`), so a slow or
  hostile upstream holds at most its own share and every other source keeps the connections it
  needs; a request waits for its source's slot no longer than the timeout.
- Time: a page or API answer must arrive whole within the timeout, whatever its pace (a per-read
  timeout never stops a drip of one byte a second). A file is long by nature, so it is bounded
  by its progress instead (`Progress`): at least MIN_PROGRESS bytes per timeout of waiting on
  the upstream (time spent by whoever reads it does not count), and MAX_FILE_SECONDS in all.
- Memory: a page or API answer is read into memory only up to `[cache] max_page_size`, counted
  after decoding (a gzip bomb stops at the cap) and refused at once when its length says so.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx2

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.sizes import human

POOL_SIZE = 200  # a worker's upstream connections, shared out among its sources
_MIN_SHARE = 16  # a source's least share: with many sources the pool grows instead
MAX_PAGE_SIZE = 64 * 2**20
# A drip of a few bytes a second is cut after one timeout; any link that moves a file at all
# (2 KiB/s with the default timeout of 30 s) is not.
MIN_PROGRESS = 64 * 1024
# The largest file GitLab takes (3 GiB by default) at 256 KiB/s: a file that arrives that slowly
# is not a healthy download, and a body that never ends holds its connection no longer.
MAX_FILE_SECONDS = 4 * 3600.0


def share(sources: int) -> int:
    """The connections one source may hold at once, with `sources` sources configured."""
    return max(_MIN_SHARE, POOL_SIZE // max(1, sources))


def stopped(source: str, bound: str, reason: str, *, timeout: bool = False) -> SourceUnavailable:
    """A request `bound` stopped, counted."""
    metrics.UPSTREAM_STOPPED.labels(source, bound).inc()
    return SourceUnavailable(source, reason, timeout=timeout)


@dataclass(frozen=True)
class Bounds:
    """`timeout`: [gitlab] timeout, a page's total deadline and a file's progress window;
    `per_source`: the connections one source may hold at once."""

    timeout: float = 30.0
    max_page_size: int = MAX_PAGE_SIZE
    per_source: int = POOL_SIZE


@dataclass
class Slots:
    """Each source's share of the pool: at most `bounds.per_source` requests in flight."""

    bounds: Bounds
    _taken: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    @asynccontextmanager
    async def held(self, source: str) -> AsyncIterator[None]:
        """One of `source`'s connections, for the body; SourceUnavailable (a 504) when none
        frees up within the timeout."""
        semaphore = self._taken.get(source)
        if semaphore is None:
            semaphore = self._taken[source] = asyncio.Semaphore(self.bounds.per_source)
        try:
            async with asyncio.timeout(self.bounds.timeout):
                await semaphore.acquire()
        except TimeoutError:
            raise stopped(
                source,
                "busy",
                f"all {self.bounds.per_source} connections of this source are busy (its "
                f"upstream answers slowly); none freed up within {self.bounds.timeout:g}s",
                timeout=True,
            ) from None
        try:
            yield
        finally:
            semaphore.release()


async def page_body(source: str, response: httpx2.Response, bounds: Bounds, host: str) -> bytes:
    """The decoded body of a page or API answer, at most `bounds.max_page_size` bytes."""
    limit = bounds.max_page_size
    declared = response.headers.get("content-length", "")
    encoded = response.headers.get("content-encoding", "identity").strip().lower()
    if encoded == "identity" and declared.isdigit() and int(declared) > limit:
        raise _too_large(source, host, limit)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _too_large(source, host, limit)
    return bytes(body)


def _too_large(source: str, host: str, limit: int) -> SourceUnavailable:
    return stopped(
        source,
        "max_page_size",
        f"{host} sent a page larger than [cache] max_page_size ({human(limit)})",
    )


def deadline_passed(source: str, host: str, bounds: Bounds) -> SourceUnavailable:
    return stopped(
        source,
        "deadline",
        f"{host} did not answer in full within {bounds.timeout:g}s ([gitlab] timeout)",
        timeout=True,
    )


class Progress:
    """A file's body must keep arriving: MIN_PROGRESS bytes per `timeout` seconds spent waiting
    on the upstream, and the whole within MAX_FILE_SECONDS."""

    def __init__(self, source: str, host: str, bounds: Bounds) -> None:
        self.source, self.host, self.window = source, host, bounds.timeout
        self.waited, self.arrived = 0.0, 0
        self.ends = time.monotonic() + MAX_FILE_SECONDS

    def allowance(self) -> float:
        """Seconds the next read may wait."""
        return max(0.0, min(self.window - self.waited, self.ends - time.monotonic()))

    def got(self, size: int, waited: float) -> None:
        self.waited += waited
        self.arrived += size
        if self.arrived >= MIN_PROGRESS:  # a new window
            self.waited, self.arrived = 0.0, 0

    def too_slow(self) -> SourceUnavailable:
        if time.monotonic() >= self.ends:
            reason = f"{self.host} did not send the whole file within {MAX_FILE_SECONDS:g}s"
        else:
            reason = (
                f"{self.host} sent under {human(MIN_PROGRESS)} of the file in "
                f"{self.window:g}s ([gitlab] timeout)"
            )
        return stopped(self.source, "progress", reason, timeout=True)
