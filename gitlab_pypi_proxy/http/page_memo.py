"""This worker's rendered pages, each answered again without asking the index while every record
behind it is fresh and no worker has announced a change since (the coordinator's generation,
compared on every lookup). Keyed by what the route answers: the page (or "/"), the media type,
the sources the reader may read and the view it is read through.

Bounded by count and by bytes: the oldest pages go first. A page is kept as its gzip copy alone
(pip and uv take gzip; another client's body is decompressed from it): the largest public
projects render to a few MiB, a fifth of that gzipped, so MAX_BYTES holds every page of a big
install (boto3, numpy, pandas and their dependencies) while each worker's memory stays small
however many names are asked.
"""

import time
from collections.abc import Hashable

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.http.serialize import Rendered
from gitlab_pypi_proxy.storage.coordinator import Coordinator

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
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
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

    def put(self, key: Key, value: Rendered, fresh_until: float, generation: Hashable) -> None:
        """Keep `value` while fresh; `generation` is the one read before its inputs were."""
        if fresh_until > time.time():
            self._pages.set(key, (generation, value.compact()), until=fresh_until)
