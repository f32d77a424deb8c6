"""This worker's rendered pages, each answered again without asking the index while every record
behind it is fresh and no worker has announced a change since (the coordinator's generation,
compared on every lookup). Keyed by what the route answers: the page (or "/"), the media type,
the sources the reader may read and the view it is read through.

Bounded by count and by bytes: the oldest pages go first. A page is kept as its gzip copy alone
(pip and uv take gzip; another client's body is decompressed from it): the largest public
projects render to a few MiB, a fifth of that gzipped, so MAX_BYTES holds every page of a big
install (boto3, numpy, pandas and their dependencies) while each worker's memory stays small
however many names are asked. On one machine, a page rendered by one worker is also kept on its
disk for the others (gitlab_pypi_proxy.storage.rendered_pages): a worker renders only what no
worker has rendered under the current generation. A page whose project's wheels gained core
metadata since (the coordinator's enrichment) is as right as it was: it is served while it is
rendered again in the background, once the worker's page requests pause.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from gitlab_pypi_proxy.aio import TaskSet, TTLMemo
from gitlab_pypi_proxy.http.serialize import Rendered
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.rendered_pages import RenderedPages

log = logging.getLogger("proxy.pages")

_ENTRIES = 10_000
MAX_BYTES = 8 * 2**20
# with the machine's rendered pages on its disk, a worker holds the newest in memory only: an
# older one is a read from the kernel's page cache
SHARED_MAX_BYTES = 2 * 2**20
QUIET = 0.25  # seconds without a page asked before one is rendered again in the background
REFRESH_WAIT = 5.0  # seconds a page to render again waits for such a pause, at most

Key = tuple[str, str, frozenset[str] | None, str]


def memo_key(what: str, media: str, allowed: frozenset[str] | None, view: str = "") -> Key:
    """The memo's key for the page `what` (a normalized name, or "/") in `media`, as rendered
    for a reader of the sources `allowed` (None: every source) through `view` ("": the root;
    a view may order the same sources otherwise)."""
    return (what, media, allowed, view)


@dataclass(frozen=True, slots=True)
class Generation:
    """What a page is rendered under: the coordinator's generation (its records and policy:
    a page of another one is never served) and its project's enrichment (the metadata it may
    advertise: a page of another one is served while the new one is rendered)."""

    records: Hashable
    enrichment: Hashable


# renders a page again: the page and until when it is fresh, or None (a stale answer)
Render = Callable[[], Awaitable[tuple[Rendered, float] | None]]


def _bytes(entry: tuple[Generation, Rendered]) -> int:
    return entry[1].kept_bytes


class PageMemo:
    def __init__(
        self,
        coordinator: Coordinator,
        shared: RenderedPages | None = None,
        rendering: Callable[[], str] = lambda: "",
    ) -> None:
        self.coordinator = coordinator
        self.shared = shared  # the machine's rendered pages, if its workers share them
        # what pages are rendered from besides the records (services.Services.rendering): only
        # workers that say the same share them
        self.rendering = rendering
        self.sharing = TaskSet(log, "sharing a rendered page")
        self.refreshing = TaskSet(log, "rendering a page again")
        self._one_at_a_time = asyncio.Semaphore(1)
        self._asked = 0.0  # time.monotonic() of the last page asked
        # (generation, rendered page) until its inputs expire (wall-clock times)
        self._pages: TTLMemo[Key, tuple[Generation, Rendered]] = TTLMemo(
            _ENTRIES,
            clock=time.time,
            weigh=_bytes,
            max_weight=MAX_BYTES if shared is None else SHARED_MAX_BYTES,
        )

    def generation(self, what: str) -> Generation:
        """The generation page `what` (a normalized name, or "/") is rendered under: read it
        before the page's inputs are, so that a racing change wins."""
        page = "" if what == "/" else what
        enrichment = self.coordinator.enrichment(page) if page else 0
        return Generation(self.coordinator.generation(page), enrichment)

    def get(self, key: Key, generation: Generation) -> Rendered | None:
        self._asked = time.monotonic()
        hit = self._pages.get(key)
        if hit is None or hit[0] != generation:
            return None
        return hit[1]

    async def find(self, key: Key, generation: Generation) -> tuple[Rendered, bool] | None:
        """`get`, else the page another worker of this machine rendered under `generation`
        (then kept here too); either may be one rendered before its project's wheels gained
        metadata (`enriched`): the page, and whether it is the current one."""
        self._asked = time.monotonic()
        hit = self._pages.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1], True
        shared = await self._shared_page(key, generation)
        if shared is not None:
            rendered, enrichment, until = shared
            current = enrichment == repr(generation.enrichment)
            # a page of another enrichment is kept under one no lookup has: not current here
            kept = generation if current else Generation(generation.records, enrichment)
            self._pages.set(key, (kept, rendered), until=until)
            return rendered, current
        if hit is not None and hit[0].records == generation.records:
            return hit[1], False
        return None

    def put(self, key: Key, value: Rendered, fresh_until: float, generation: Generation) -> None:
        """Keep `value` while fresh, here and for the machine's other workers; `generation` is
        the one read before its inputs were."""
        if fresh_until <= time.time():
            return
        value = value.compact()
        self._pages.set(key, (generation, value), until=fresh_until)
        if self.shared is None:
            return
        disk_key = self.shared.key(key, generation.records, self.rendering())
        if disk_key is not None:
            data = _encoded(value, generation.enrichment)
            self.sharing.spawn(self.shared.put(disk_key, data, fresh_until))

    async def _shared_page(
        self, key: Key, generation: Generation
    ) -> tuple[Rendered, str, float] | None:
        """Page `key` as another worker of this machine rendered it under `generation`'s
        records: the page, the repr of the enrichment it was rendered under (kept with the
        page, not in its key) and until when it is fresh."""
        if self.shared is None:
            return None
        disk_key = self.shared.key(key, generation.records, self.rendering())
        found = None if disk_key is None else await self.shared.get(disk_key)
        decoded = None if found is None else _decoded(found[0], key[1])
        if found is None or decoded is None:
            return None
        return decoded[0], decoded[1], found[1]

    async def _pause_in_asking(self) -> None:
        """Until no page was asked for QUIET seconds, or REFRESH_WAIT passed: an install's burst
        of pages is answered before pages are rendered again beside it."""
        deadline = time.monotonic() + REFRESH_WAIT
        while (now := time.monotonic()) < deadline and now - self._asked < QUIET:
            await asyncio.sleep(min(QUIET - (now - self._asked), deadline - now))

    def refresh(self, key: Key, render: Render, generation: Generation) -> None:
        """Render page `key` again in the background, one at a time and after a pause in the
        pages asked, and keep it: `find` gave one rendered before its project's wheels gained
        metadata."""

        async def again() -> None:
            async with self._one_at_a_time:
                await self._pause_in_asking()
                fresh = await render()
            if fresh is not None:
                self.put(key, *fresh, generation)

        self.refreshing.spawn(again(), key=key)

    async def close(self) -> None:
        await self.refreshing.close()
        await self.sharing.close()
        if self.shared is not None:
            self.shared.close()


# On the disk: b"g" (a gzip copy) or b"p" (the plain bytes), the ETag, a space, the enrichment
# it was rendered under (a stamp, from the machine's coordinator), a newline, the bytes.
def _encoded(page: Rendered, enrichment: Hashable) -> bytes:
    kind, body = (b"g", page.gzipped) if page.gzipped is not None else (b"p", page.plain)
    return kind + f"{page.etag} {enrichment!r}".encode() + b"\n" + (body or b"")


def _decoded(data: bytes, media: str) -> tuple[Rendered, str] | None:
    """The page `_encoded` made `data` of, and the repr of its enrichment."""
    head, newline, body = data.partition(b"\n")
    etag, space, enrichment = head[1:].decode("ascii", "replace").partition(" ")
    if not newline or not space or head[:1] not in (b"g", b"p"):
        return None
    if head[:1] == b"g":
        return Rendered(None, media, etag, body), enrichment
    return Rendered(body, media, etag, None), enrichment
