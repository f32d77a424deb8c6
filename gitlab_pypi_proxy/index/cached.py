"""One source's answers through the index records (gitlab_pypi_proxy.storage.records): fresh for
the TTL, asked again after it, served stale when the upstream cannot answer; offline, only what
is kept.

An outage is one log line when it begins and one when it ends (each stale answer counted in
`stale_answers`). A "not here" (None) is kept for `negative_ttl`, so names no source has cost one
request per source per negative TTL. Concurrent misses share one fetch, which a client hanging
up does not cancel. This module owns the records' keys (`PageKey`, `NamesKey`, `ShadowKey`,
`PollKey`): whoever reads or forgets a record goes through them. It also records where a fetched
page's files are (gitlab_pypi_proxy.storage.locations): at once for a source that serves only
what its pages list, in the background for one asked by digest alone."""

import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import SingleFlight, TaskSet
from gitlab_pypi_proxy.errors import Offline, SourceUnavailable
from gitlab_pypi_proxy.index.index_protocol import Answer
from gitlab_pypi_proxy.model import ProjectPage
from gitlab_pypi_proxy.sources.base import Source
from gitlab_pypi_proxy.storage.locations import FileLocations
from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.records import RecordStore

log = logging.getLogger("proxy.cache.pages")


@dataclass(frozen=True, slots=True)
class PageKey:
    """A source's page of a name (None: the source does not have it)."""

    source: str
    name: str

    @property
    def raw(self) -> tuple[str, str, str]:
        return ("page", self.source, self.name)


@dataclass(frozen=True, slots=True)
class NamesKey:
    """A source's project list."""

    source: str

    @property
    def raw(self) -> tuple[str, str]:
        return ("names", self.source)


@dataclass(frozen=True, slots=True)
class ShadowKey:
    """Whether a public source also has a private name (gitlab_pypi_proxy.index.shadows)."""

    source: str
    name: str

    @property
    def raw(self) -> tuple[str, str, str]:
        return ("shadow", self.source, self.name)


@dataclass(frozen=True, slots=True)
class PollKey:
    """What the last poll of a GitLab source for names published to it saw (not a source's
    answer to a client: bundles and `cache stats` leave it out)."""

    source: str

    @property
    def raw(self) -> tuple[str, str]:
        return ("poll", self.source)


Key = PageKey | NamesKey | ShadowKey


def parse_key(raw: object) -> Key | None:
    """The key of a stored record, or None for records that are not a source's answer."""
    if not isinstance(raw, tuple) or not raw or not all(isinstance(p, str) for p in raw):
        return None
    if raw[0] == "page" and len(raw) == 3:
        return PageKey(raw[1], raw[2])
    if raw[0] == "names" and len(raw) == 2:
        return NamesKey(raw[1])
    if raw[0] == "shadow" and len(raw) == 3:
        return ShadowKey(raw[1], raw[2])
    return None


@dataclass(frozen=True)
class Freshness:
    ttl: float
    negative_ttl: float
    offline: bool = False

    def ttl_of(self, value: Any) -> float:
        return self.negative_ttl if value is None else self.ttl

    def expired(self, entry: Entry) -> bool:
        return time.time() - entry.fetched_at >= self.ttl_of(entry.value)


class CachedSource:
    def __init__(
        self,
        source: Source,
        store: RecordStore,
        locations: FileLocations,
        freshness: Freshness,
        tasks: TaskSet,
    ) -> None:
        self.source, self.store, self.locations = source, store, locations
        self.freshness, self.tasks = freshness, tasks
        self._flights: SingleFlight[Hashable, tuple[Any, float]] = SingleFlight(
            metrics.PAGE_JOIN.inc
        )
        self._stale = 0  # answers served stale since an outage the transport did not see began
        self._outage = False

    @property
    def name(self) -> str:
        return self.source.name

    async def page(self, name: str) -> Answer[ProjectPage | None]:
        """The source's page of normalized `name` (None: it does not have it)."""
        remembered: list[ProjectPage] = []
        load = self._page_loader(name, remembered)
        answer: Answer[ProjectPage | None] = await self.fetch(PageKey(self.name, name), load)
        if remembered:  # the source finds a file by its digest meanwhile: off the client's time
            self.tasks.spawn(self.locations.remember(remembered[0].files))
        return answer

    async def kept(self, name: str) -> bool:
        """Whether the source's answer for normalized `name` is kept, fresh or not, or being
        fetched by this worker: a look that reads nothing."""
        key = PageKey(self.name, name)
        return key in self._flights or await self.store.has(key.raw)

    async def refresh(self, name: str) -> ProjectPage | None:
        """The source's page of normalized `name` asked now, whatever is kept, and kept in its
        place. Raises what the upstream raises (SourceUnavailable, ...): what was kept stays."""
        remembered: list[ProjectPage] = []
        page = await self._page_loader(name, remembered)()
        await self.store.put(PageKey(self.name, name).raw, Entry(page, time.time()))
        if remembered:
            await self.locations.remember(remembered[0].files)
        return page

    def _page_loader(
        self, name: str, remembered: list[ProjectPage]
    ) -> Callable[[], Awaitable[ProjectPage | None]]:
        """Loads the page of `name`; where its files are is remembered at once for a source
        that serves only what its pages list, else the page is put in `remembered`."""

        async def load() -> ProjectPage | None:
            page = await self.source.project_page(name)
            if page is not None and page.files:
                first = page.files[0]
                if self.source.file_for(first.sha256, first.filename) is None:
                    await self.locations.remember(page.files)  # found through its page only
                else:
                    remembered.append(page)
            return page

        return load

    async def names(self) -> Answer[frozenset[str]]:
        """Every name the source holds."""
        return await self.fetch(NamesKey(self.name), self.source.project_names)

    async def has_files(self, name: str, found: Callable[[], None]) -> Answer[bool]:
        """Does the source list files of `name`? `found` is called when it is asked and does."""

        async def load() -> bool:
            page = await self.source.project_page(name)
            has = page is not None and bool(page.files)
            if has:
                found()
            return has

        return await self.fetch(ShadowKey(self.name, name), load)

    async def fetch(self, key: Key, loader: Callable[[], Awaitable[Any]]) -> Answer[Any]:
        """The record of `key`: kept while fresh, else loaded; stale only if loading fails.

        Raises Offline when offline with nothing kept, SourceUnavailable when the upstream
        fails and nothing is kept.
        """
        fresh = self.freshness
        entry = await self.store.get(key.raw)
        if entry is not None and fresh.offline:
            (metrics.PAGE_STALE if fresh.expired(entry) else metrics.PAGE_HIT).inc()
            return Answer(entry.value, stale=fresh.expired(entry), fresh_until=math.inf)
        if entry is not None and not fresh.expired(entry):
            metrics.PAGE_HIT.inc()
            until = entry.fetched_at + fresh.ttl_of(entry.value)
            return Answer(entry.value, stale=False, fresh_until=until)
        if fresh.offline:
            raise Offline("the proxy is offline and has no cached copy")
        try:
            value, fetched_at = await self._flights.run(key, lambda: self._load(key, loader))
        except SourceUnavailable as exc:
            if entry is None:
                raise
            self._served_stale(key, exc)
            return Answer(entry.value, stale=True)
        metrics.PAGE_MISS.inc()
        if self._outage:
            self._outage = False
            log.warning(
                "source %s answers again: %d kept answers were served stale meanwhile",
                self.name,
                self._stale,
            )
        return Answer(value, False, fetched_at + fresh.ttl_of(value), loaded=True)

    def _served_stale(self, key: Key, exc: SourceUnavailable) -> None:
        metrics.PAGE_STALE.inc()
        metrics.STALE_ANSWERS.labels(self.name).inc()
        log.debug("serving stale %s: %s", key.raw, exc)
        if not exc.reported and not self._outage:
            self._outage, self._stale = True, 0
            log.warning(
                "source %s cannot answer (%s): its kept answers are served stale until it can",
                self.name,
                exc.reason,
            )
        self._stale += 1

    async def _load(self, key: Key, loader: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
        # A lookup (a thread) can answer "miss" after another caller's load has landed and its
        # flight ended: look once more before asking the upstream again.
        landed = await self.store.get(key.raw)
        if landed is not None and not self.freshness.expired(landed):
            return landed.value, landed.fetched_at
        value = await loader()
        entry = Entry(value, time.time())
        await self.store.put(key.raw, entry)
        return value, entry.fetched_at


async def forget(store: RecordStore, sources: Sequence[str], *names: str) -> None:
    """Read-your-writes: the next page of each of `names` and the next project list, through
    any of `sources`, are asked for afresh, by every worker."""
    keys: list[Hashable] = []
    for source in sources:
        keys += [PageKey(source, name).raw for name in names] + [NamesKey(source).raw]
    await store.forget(*keys)
