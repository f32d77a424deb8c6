"""A GitLab project's PyPI root index (GitLab 15.1+), kept in memory as a set of normalized names:
a hint that decides what may be asked of GitLab at once, never what a page says.

A name in the set is one the project listed lately: its page very likely has files, so the
Packages API listing for its upload times may go out beside the page (one round trip where two
were); a name not in it, or any name while the set is not known, is asked as before (the listing
only once the page has files). Once a serving worker has started it (`start`), the set is read in
the background, at background priority of the request budget, when the worker first consults it
(its first page: a worker that served nothing has asked GitLab nothing, as the status page says)
and again when consulted after `ttl` ([cache] index_ttl); a failure to read it leaves the set as
it was and is tried again after `ttl`. Being a hint, it is read at most once a minute even where
pages revalidate on every request (`index_ttl = 0`). The proxy's own uploads add their name at
once. Until started (prefetch, the `cache` commands) it is never read.
"""

import logging
import math
import time
from collections.abc import Awaitable, Callable

from gitlab_pypi_proxy.aio import TaskSet

log = logging.getLogger("proxy.sources.gitlab")

MIN_TTL = 60.0  # seconds: the least time between two reads

Fetch = Callable[[], Awaitable[frozenset[str] | None]]  # None: GitLab did not list them now


class RootIndex:
    def __init__(
        self, source: str, fetch: Fetch, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._source, self._fetch, self._clock = source, fetch, clock
        self._ttl = max(ttl, MIN_TTL)
        self._names: frozenset[str] = frozenset()
        self._added: set[str] = set()  # uploaded while a read was under way: kept over its answer
        self._read_at = -math.inf
        self._started = False
        self._tasks = TaskSet(log, f"source {source}: root index")

    def start(self) -> None:
        """Keep the root index from now on: read when first consulted, fresh while consulted."""
        self._started = True

    def lists(self, name: str) -> bool:
        """Did the root index list normalized `name` when last read (or was it uploaded since)?"""
        self._refresh_if_due()
        return name in self._names

    def add(self, name: str) -> None:
        """`name` was uploaded through the proxy."""
        self._names |= {name}
        self._added.add(name)

    async def settled(self) -> None:
        """Wait until a read under way has ended (tests)."""
        await self._tasks.settled()

    async def close(self) -> None:
        await self._tasks.close()

    def _refresh_if_due(self) -> None:
        if self._started and self._clock() - self._read_at >= self._ttl:
            self._read_at = self._clock()  # a failed read is tried again after the TTL only
            self._tasks.spawn(self._refresh(), key="read")

    async def _refresh(self) -> None:
        self._added.clear()
        names = await self._fetch()
        if names is not None:
            self._names = names | self._added
            log.debug("source %s: root index read, %d names", self._source, len(names))
