"""Dependency-aware warming: the pages of a wheel's dependencies, asked before the client does.

pip resolves page by page: it reads a wheel's METADATA, then asks for the page of each
dependency, one after another, and each cold page costs it a round trip to GitLab. The proxy
reads the METADATA of the wheel a client is about to install anyway
(gitlab_pypi_proxy.index.core_metadata), so it knows the `Requires-Dist` names first: it asks the
index for their pages in the background, and the client finds them cached. The warmed pages' own
newest wheels are read the same way, so the warming follows the dependency tree as far as the client
will.

A name whose answer some source has kept already (another worker's, a client's) is not warmed:
that page is not read again for nothing.

Bounded: only requirements that apply whatever extras the client asks for (no `extra` marker);
at most MAX_PER_WHEEL names of one wheel; each name at most once per REWARM seconds in this
process; WARMING pages at once. A name that cannot be had is simply not warm (the client's own
request gets the answer). Nothing is warmed offline, or with `[cache] warm_dependencies = false`.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from email.parser import BytesHeaderParser

from packaging.requirements import InvalidRequirement, Requirement

from gitlab_pypi_proxy.aio import TaskSet, TTLMemo
from gitlab_pypi_proxy.names import normalize

log = logging.getLogger("proxy.warming")

MAX_PER_WHEEL = 30
REWARM = 300.0  # seconds: a name warmed is not warmed again before this
WARMING = 4  # pages asked at once
_REMEMBERED = 4096  # names, and wheels (~200 bytes each)


def dependencies(metadata: bytes) -> list[str]:
    """The normalized names of the `Requires-Dist` of a METADATA file that apply without an
    extra, in order, each once."""
    headers = BytesHeaderParser().parsebytes(metadata)
    names: list[str] = []
    for line in headers.get_all("Requires-Dist") or []:
        try:
            requirement = Requirement(str(line))
        except InvalidRequirement:
            continue
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        name = normalize(requirement.name)
        if name not in names:
            names.append(name)
    return names


class Warmer:
    """Asks `page(name)` for the dependencies of the wheels clients are about to install."""

    def __init__(
        self,
        page: Callable[[str], Awaitable[object]],
        kept: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.page, self.kept = page, kept
        self._recent: TTLMemo[str, None] = TTLMemo(_REMEMBERED, REWARM)  # names warmed
        self._wheels: TTLMemo[str, None] = TTLMemo(_REMEMBERED, REWARM)  # METADATA read
        self._limit = asyncio.Semaphore(WARMING)
        self.tasks = TaskSet(log, "warming a dependency's page")

    def warm(self, sha256: str, metadata: bytes) -> None:
        """Warm the pages of what the METADATA of wheel `sha256` requires (returns at once). A
        wheel's METADATA is parsed once per REWARM: its sidecar is served on the event loop to
        every client that installs it."""
        if sha256 in self._wheels:
            return
        self._wheels.set(sha256, None)
        try:
            names = dependencies(metadata)[:MAX_PER_WHEEL]
        except Exception as exc:  # a METADATA that does not parse warms nothing
            log.info("no dependencies to warm: %s", exc)
            return
        for name in names:
            if name in self._recent:
                continue
            self._recent.set(name, None)
            self.tasks.spawn(self._warm(name), key=name)

    async def _warm(self, name: str) -> None:
        async with self._limit:
            try:
                if not await self.kept(name):
                    await self.page(name)
            except Exception as exc:  # not here, upstream down, refused: the client will see
                log.debug("dependency page %s not warmed: %s", name, exc)

    async def close(self) -> None:
        await self.tasks.close()
