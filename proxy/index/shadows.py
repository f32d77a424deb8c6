"""Notice private names that a public index also has (a dependency-confusion attempt, or a clash).

The check runs in the background, never delaying the page, and its answer is cached like a page:
each public source is asked about a private name at most once per index TTL.
"""

import logging
from collections.abc import Sequence

from proxy.aio import TaskSet, TTLMemo
from proxy.errors import Offline, SourceUnavailable
from proxy.sources.base import Source
from proxy.storage.pages import PageCache

log = logging.getLogger("proxy.index.shadows")


class ShadowCheck:
    def __init__(self, pages: PageCache) -> None:
        self.pages = pages
        self._checked: TTLMemo[str, None] = TTLMemo(100_000, max(pages.ttl, 1))
        self.tasks = TaskSet(log, "shadow check")

    def check(self, name: str, public: Sequence[Source]) -> None:
        """Start a background check of `name` against `public`, unless one ran recently."""
        if name in self._checked:
            return
        self._checked.set(name, None)
        self.tasks.spawn(self._run(name, public))

    async def _run(self, name: str, public: Sequence[Source]) -> None:
        for source in public:

            async def load(source: Source = source) -> bool:
                page = await source.project_page(name)
                found = page is not None and bool(page.files)
                if found:
                    log.warning(
                        "private name %s also exists on public source %s: it is served from "
                        "the private sources only",
                        name,
                        source.name,
                    )
                return found

            try:
                await self.pages.fetch(("shadow", source.name, name), load)
            except (SourceUnavailable, Offline) as exc:
                log.debug("shadow check of %s on %s skipped: %s", name, source.name, exc)
            except Exception as exc:
                log.warning("shadow check of %s on %s failed: %s", name, source.name, exc)
