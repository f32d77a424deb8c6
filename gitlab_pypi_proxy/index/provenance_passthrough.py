"""PEP 740 provenance passed through from a public index: a file's provenance, fetched from the
source whose page listed it, verified once against the file's sha256 when it is kept (in a
thread: gitlab_pypi_proxy.policy.attestations), then served from the store, as that source's: a
reader gets the object of a source it may read that lists the file, never another's kept under
the same digest. Concurrent requests for the same file's provenance fetch it once."""

import asyncio
import logging
from collections.abc import Mapping

from gitlab_pypi_proxy.aio import SingleFlight
from gitlab_pypi_proxy.errors import FileNotFoundUpstream, NotFound, SourceUnavailable, Unavailable
from gitlab_pypi_proxy.index.index_protocol import Readable
from gitlab_pypi_proxy.policy import attestations
from gitlab_pypi_proxy.sources.base import Sidecars
from gitlab_pypi_proxy.storage.locations import FileLocations
from gitlab_pypi_proxy.storage.provenance_store import Kept, ProvenanceStore

log = logging.getLogger("proxy.provenance")


def check(body: bytes, filename: str, sha256: str) -> tuple[bool, str]:
    """Verify `body` for the file (blocking: a thread)."""
    try:
        result = attestations.verify(attestations.parse(body), filename, sha256)
    except attestations.ProvenanceError as exc:
        return False, f"not verified: {exc}"
    return result.verified, result.detail


class Provenances:
    def __init__(
        self, store: ProvenanceStore, locations: FileLocations, sidecars: Mapping[str, Sidecars]
    ) -> None:
        self.store, self.locations, self.sidecars = store, locations, dict(sidecars)
        self._flights: SingleFlight[tuple[str, str], Kept] = SingleFlight()

    async def get(self, sha256: str, filename: str, allowed: Readable = None) -> Kept:
        """The provenance of the file; raises NotFound when no readable source offers one,
        Unavailable when the one that does cannot be reached."""
        listed = await self.locations.of(sha256)
        offers = [
            f
            for f in listed
            if f.provenance
            and f.filename == filename
            and f.source in self.sidecars
            and (allowed is None or f.source in allowed)
        ]
        if not offers:
            raise NotFound(f"no readable source offers a provenance for {filename}")
        file = offers[0]
        kept = await self.store.get(file.source, sha256)
        if kept is not None:
            return kept

        async def fetch() -> Kept:
            try:
                body = await self.sidecars[file.source].provenance(file)
            except FileNotFoundUpstream:
                raise NotFound(f"{file.source} has no provenance for {filename}") from None
            except SourceUnavailable as exc:
                raise Unavailable([exc]) from None
            verified, detail = await asyncio.to_thread(check, body, filename, sha256)
            log.info("provenance of %s from %s: %s", filename, file.source, detail)
            result = Kept(body, verified, detail)
            await self.store.put(file.source, sha256, result)
            return result

        return await self._flights.run((file.source, sha256), fetch)
