"""The OSV index in force in this process: read in a thread at start and again on SIGHUP. A bad
export read on SIGHUP keeps the index in force and logs why; at start it is an error (serving
with no advisories because the export broke would lift the protection silently)."""

import asyncio
import logging
from pathlib import Path

from gitlab_pypi_proxy.aio import long_work
from gitlab_pypi_proxy.policy.osv import OsvError, VulnerabilityIndex, load

log = logging.getLogger("proxy.policy")

_NONE = VulnerabilityIndex()


class Advisories:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.index = _NONE  # the index in force; replaced whole, never changed in place
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the export at start. Raises OsvError saying why it cannot be read."""
        if self.path is None:
            return
        self.index = await long_work(load, self.path)
        self._loaded()

    async def reload(self) -> bool:
        """Read the export again (SIGHUP); True when the new one is in force."""
        if self.path is None:
            return False
        async with self._lock:  # two signals in a row: one read after the other
            try:
                index = await long_work(load, self.path)
            except OsvError as exc:
                log.error("vulnerabilities: %s; keeping the advisories read before", exc)
                return False
            self.index = index
        self._loaded()
        return True

    def _loaded(self) -> None:
        stats = self.index.stats
        log.info(
            "vulnerabilities: %s: %d advisories for %d projects (%d members skipped; %d ranges"
            " of commits and %d of no PEP 440 version ignored)",
            self.path,
            stats.advisories,
            len(self.index.by_name),
            stats.skipped_members,
            stats.ignored_ranges,
            stats.unparsable_ranges,
        )
