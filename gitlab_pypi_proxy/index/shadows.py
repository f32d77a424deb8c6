"""Notice private names that a public index also has (a dependency-confusion attempt, or a clash).

The check runs in the background, never delaying the page, and its answer is kept like a page
(gitlab_pypi_proxy.index.cached): each public source is asked about a private name at most once per
index TTL."""

import logging
from collections.abc import Sequence

from gitlab_pypi_proxy.aio import TaskSet, TTLMemo
from gitlab_pypi_proxy.errors import Offline, SourceUnavailable
from gitlab_pypi_proxy.index.cached import CachedSource

log = logging.getLogger("proxy.index.shadows")

_REMEMBERED = 4096  # names checked lately (~200 bytes each)


class ShadowCheck:
    def __init__(self, ttl: float) -> None:
        self._checked: TTLMemo[str, None] = TTLMemo(_REMEMBERED, max(ttl, 1))
        self.tasks = TaskSet(log, "shadow check")

    def check(self, name: str, public: Sequence[CachedSource]) -> None:
        """Start a background check of `name` against `public`, unless one ran recently."""
        if name in self._checked:
            return
        self._checked.set(name, None)
        self.tasks.spawn(self._run(name, public))

    async def _run(self, name: str, public: Sequence[CachedSource]) -> None:
        for source in public:

            def found(source: CachedSource = source) -> None:
                log.warning(
                    "private name %s also exists on public source %s: it is served from the "
                    "private sources only",
                    name,
                    source.name,
                )

            try:
                await source.has_files(name, found)
            except (SourceUnavailable, Offline) as exc:
                log.debug("shadow check of %s on %s skipped: %s", name, source.name, exc)
            except Exception as exc:
                log.warning("shadow check of %s on %s failed: %s", name, source.name, exc)
