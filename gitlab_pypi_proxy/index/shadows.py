"""Notice private names that a public index also has (a dependency-confusion attempt, or a clash).

The check runs in the background, never delaying the page, and its answer is kept like a page
(gitlab_pypi_proxy.index.cached): each public source is asked about a private name at most once per
index TTL. What it found is logged and kept (`ShadowedNames`: the newest KEPT names, with the
source and when it was seen, shared by every worker and replica) for the status page.
"""

import logging
import time
from collections.abc import Sequence

from gitlab_pypi_proxy.aio import TaskSet, TTLMemo
from gitlab_pypi_proxy.errors import Offline, SourceUnavailable
from gitlab_pypi_proxy.index.cached import CachedSource
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.shared_json import Document, SharedJson, TooLarge

log = logging.getLogger("proxy.index.shadows")

KEPT = 200  # names the status page shows; the oldest seen go first
_REMEMBERED = 4096  # names checked lately (~200 bytes each)
_VALUE = "shadowed-names"
_MAX_BYTES = 64 * 2**10


class ShadowedNames:
    """The private names a public source was last seen to have: name → {source, seen}."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.shared = SharedJson(coordinator, _VALUE, _MAX_BYTES)

    async def seen(self) -> list[tuple[str, str, float]]:
        """(name, public source, when it was seen), the newest first."""
        found = [
            (name, str(entry.get("source", "")), float(entry.get("seen", 0)))
            for name, entry in (await self.shared.read()).items()
            if isinstance(entry, dict)
        ]
        return sorted(found, key=lambda n: n[2], reverse=True)

    async def add(self, name: str, source: str) -> None:
        def change(document: Document) -> Document:
            document[name] = {"source": source, "seen": time.time()}
            newest = sorted(document.items(), key=lambda i: _seen(i[1]), reverse=True)
            return dict(newest[:KEPT])

        try:
            await self.shared.change(change, announce=False)  # no page shows it
        except TooLarge as exc:  # names are short: only a change of KEPT gets here
            log.warning("private name %s also public: not kept for the status page: %s", name, exc)


def _seen(entry: object) -> float:
    return float(entry.get("seen", 0)) if isinstance(entry, dict) else 0.0


class ShadowCheck:
    def __init__(self, ttl: float, kept: ShadowedNames | None = None) -> None:
        self._checked: TTLMemo[str, None] = TTLMemo(_REMEMBERED, max(ttl, 1))
        self.tasks = TaskSet(log, "shadow check")
        self.kept = kept

    def check(self, name: str, public: Sequence[CachedSource]) -> None:
        """Start a background check of `name` against `public`, unless one ran recently."""
        if name in self._checked:
            return
        self._checked.set(name, None)
        self.tasks.spawn(self._run(name, public))

    async def _run(self, name: str, public: Sequence[CachedSource]) -> None:
        for source in public:
            found: list[str] = []

            def log_it(source: CachedSource = source, found: list[str] = found) -> None:
                log.warning(
                    "private name %s also exists on public source %s: it is served from the "
                    "private sources only",
                    name,
                    source.name,
                )
                found.append(source.name)

            try:
                await source.has_files(name, log_it)
            except (SourceUnavailable, Offline) as exc:
                log.debug("shadow check of %s on %s skipped: %s", name, source.name, exc)
            except Exception as exc:
                log.warning("shadow check of %s on %s failed: %s", name, source.name, exc)
            if found and self.kept is not None:
                await self.kept.add(name, source.name)
