"""Purging a cached file (`DELETE /-/files/<sha256>`): its bytes and everything derived from
them, everywhere, so that the next request fetches it from upstream again, verified.

The blob goes from the blob store (the bucket, shared, once; or this machine's cache directory);
the PEP 658 metadata and PEP 740 provenance kept beside it (per source and digest) go from this
machine at once, and from every other replica when it hears the purge: a record forgotten under
`purge_key` (gitlab_pypi_proxy.storage.records) is news every worker of every replica receives,
and each drops what its machine keeps (its own cache directory's blob too, when files are not in
a shared bucket). Forgetting also tells every worker that its rendered pages are out of date: no
page advertises metadata that is gone.

Kept: where the file is listed (locations) and which sources delivered its digest (deliveries):
they are facts about the sources, not cached bytes. A purge heard while Redis is down is not
heard: those replicas keep their sidecars until they are evicted, or purged again.
"""

import asyncio
import logging
from collections.abc import Hashable, Sequence

from gitlab_pypi_proxy.storage.blobs import BlobStore
from gitlab_pypi_proxy.storage.metadata_store import MetadataStore
from gitlab_pypi_proxy.storage.provenance_store import ProvenanceStore
from gitlab_pypi_proxy.storage.records import RecordStore

log = logging.getLogger("proxy.cache.files")


def purge_key(sha256: str) -> tuple[str, str]:
    """The key whose forgetting tells every replica that the file with `sha256` is purged."""
    return ("purge", sha256)


def purged_sha256(key: object) -> str | None:
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "purge":
        return str(key[1])
    return None


class Purge:
    def __init__(
        self,
        blobs: BlobStore,
        metadata: MetadataStore,
        provenance: ProvenanceStore | None,
        records: RecordStore,
        sources: Sequence[str],
        *,
        shared_blobs: bool,
    ) -> None:
        self.blobs, self.metadata, self.provenance = blobs, metadata, provenance
        self.records, self.sources = records, list(sources)
        self.shared_blobs = shared_blobs  # one delete anywhere drops the blob for every replica
        records.on_forgotten(self._heard)

    async def purge(self, sha256: str) -> bool:
        """Drop the file everywhere; whether the blob store held it. Raises what the blob store
        raises when it cannot delete (OSError, or the bucket's errors)."""
        held = await asyncio.to_thread(self.blobs.__contains__, sha256)
        await asyncio.to_thread(self.blobs.delete, sha256)
        await self._drop_sidecars(sha256)
        await self.records.forget(purge_key(sha256))
        return held

    async def _drop_sidecars(self, sha256: str) -> None:
        await self.metadata.drop(self.sources, sha256)
        if self.provenance is not None:
            await self.provenance.drop(self.sources, sha256)

    async def _heard(self, keys: list[Hashable]) -> None:
        for sha256 in filter(None, map(purged_sha256, keys)):
            try:
                if not self.shared_blobs:
                    await asyncio.to_thread(self.blobs.delete, sha256)
                await self._drop_sidecars(sha256)
            except Exception as exc:  # the next purge, or eviction, drops it
                log.warning("purge of %s heard, not done here: %s", sha256, exc)
