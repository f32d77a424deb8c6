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
worker has rendered under the current generation.
"""

import logging
import time
from collections.abc import Callable, Hashable

from gitlab_pypi_proxy.aio import TaskSet, TTLMemo
from gitlab_pypi_proxy.http.serialize import Rendered
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.rendered_pages import RenderedPages

log = logging.getLogger("proxy.pages")

_ENTRIES = 10_000
MAX_BYTES = 8 * 2**20

Key = tuple[str, str, frozenset[str] | None, str]


def memo_key(what: str, media: str, allowed: frozenset[str] | None, view: str = "") -> Key:
    """The memo's key for the page `what` (a normalized name, or "/") in `media`, as rendered
    for a reader of the sources `allowed` (None: every source) through `view` ("": the root;
    a view may order the same sources otherwise)."""
    return (what, media, allowed, view)


def _bytes(entry: tuple[Hashable, Rendered]) -> int:
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
        # (generation, rendered page) until its inputs expire (wall-clock times)
        self._pages: TTLMemo[Key, tuple[Hashable, Rendered]] = TTLMemo(
            _ENTRIES, clock=time.time, weigh=_bytes, max_weight=MAX_BYTES
        )

    def generation(self, what: str) -> Hashable:
        """The generation page `what` (a normalized name, or "/") is rendered under: read it
        before the page's inputs are, so that a racing change wins."""
        return self.coordinator.generation("" if what == "/" else what)

    def get(self, key: Key, generation: Hashable) -> Rendered | None:
        hit = self._pages.get(key)
        if hit is None or hit[0] != generation:
            return None
        return hit[1]

    async def find(self, key: Key, generation: Hashable) -> Rendered | None:
        """`get`, else the page another worker of this machine rendered under `generation`
        (then kept here too)."""
        rendered = self.get(key, generation)
        if rendered is not None or self.shared is None:
            return rendered
        disk_key = self.shared.key(key, generation, self.rendering())
        found = None if disk_key is None else await self.shared.get(disk_key)
        if found is None:
            return None
        rendered = _decoded(found[0], key[1])
        if rendered is not None:
            self._pages.set(key, (generation, rendered), until=found[1])
        return rendered

    def put(self, key: Key, value: Rendered, fresh_until: float, generation: Hashable) -> None:
        """Keep `value` while fresh, here and for the machine's other workers; `generation` is
        the one read before its inputs were."""
        if fresh_until <= time.time():
            return
        value = value.compact()
        self._pages.set(key, (generation, value), until=fresh_until)
        if self.shared is None:
            return
        disk_key = self.shared.key(key, generation, self.rendering())
        if disk_key is not None:
            self.sharing.spawn(self.shared.put(disk_key, _encoded(value), fresh_until))

    async def close(self) -> None:
        await self.sharing.close()
        if self.shared is not None:
            self.shared.close()


# On the disk: b"g" (a gzip copy) or b"p" (the plain bytes), the ETag, a newline, the bytes.
def _encoded(page: Rendered) -> bytes:
    kind, body = (b"g", page.gzipped) if page.gzipped is not None else (b"p", page.plain)
    return kind + page.etag.encode() + b"\n" + (body or b"")


def _decoded(data: bytes, media: str) -> Rendered | None:
    head, newline, body = data.partition(b"\n")
    if not newline or head[:1] not in (b"g", b"p"):
        return None
    etag = head[1:].decode("ascii", "replace")
    if head[:1] == b"g":
        return Rendered(None, media, etag, body)
    return Rendered(body, media, etag, None)
