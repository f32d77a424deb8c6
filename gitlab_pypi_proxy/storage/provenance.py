"""PEP 740 provenance objects a public index serves, by that index (source) and the sha256 of the
file they attest, with the result of verifying them once when they were kept. By source, because
an object is what that index says: another index listing the same digest gets its own, never
this one's. Small entries in diskcache, shared by every worker and kept across restarts, like the
core metadata (gitlab_pypi_proxy.storage.metadata); those of earlier versions, by digest alone,
are no longer read.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

_SIZE_LIMIT = 2**28


@dataclass(frozen=True)
class Kept:
    body: bytes  # as the index served it
    verified: bool
    detail: str  # gitlab_pypi_proxy.policy.provenance's "verified: ..." or "not verified: <why>"


class ProvenanceStore:
    def __init__(self, directory: Path) -> None:
        self._disk = open_cache(
            directory / "provenance",
            size_limit=_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
        )
        self._writes = writes_for(directory)

    def close(self) -> None:
        self._disk.close()

    async def get(self, source: str, file_sha256: str) -> Kept | None:
        entry = await asyncio.to_thread(self._disk.get, (source, file_sha256))
        return Kept(*entry) if entry is not None else None

    async def drop(self, sources: Iterable[str], file_sha256: str) -> None:
        """Forget what any of `sources` attested of the file with that digest."""
        keys = [(source, file_sha256) for source in sources]
        await asyncio.to_thread(lambda: [self._disk.delete(key) for key in keys])

    async def put(self, source: str, file_sha256: str, kept: Kept) -> None:
        """Keep it; a disk that will not take it only costs a fetch next time."""
        try:
            entry = (kept.body, kept.verified, kept.detail)
            await asyncio.to_thread(self._disk.set, (source, file_sha256), entry)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "keeping provenance")
