"""Core metadata (PEP 658) cache: a wheel's METADATA bytes and their sha256, by the wheel's sha256.

Small entries in diskcache, shared by every worker and kept across restarts. Digest and bytes are
one entry, so eviction can never leave an advertised digest without its body.
"""

import asyncio
import hashlib
from collections.abc import Iterable
from pathlib import Path

import diskcache

_SIZE_LIMIT = 2**30


class MetadataStore:
    def __init__(self, directory: Path) -> None:
        self._disk = diskcache.Cache(
            str(directory / "metadata"),
            size_limit=_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
        )

    def close(self) -> None:
        self._disk.close()

    async def digests(self, file_sha256s: Iterable[str]) -> dict[str, str]:
        """file sha256 → metadata sha256, for the files whose metadata is stored."""
        wanted = list(file_sha256s)
        return await asyncio.to_thread(self._digests, wanted)

    def _digests(self, wanted: list[str]) -> dict[str, str]:
        found = {}
        for sha256 in wanted:
            entry = self._disk.get(sha256)
            if entry is not None:
                found[sha256] = entry[0]
        return found

    async def get(self, file_sha256: str) -> bytes | None:
        entry = await asyncio.to_thread(self._disk.get, file_sha256)
        return entry[1] if entry is not None else None

    async def put(self, file_sha256: str, metadata: bytes) -> str:
        """Keep `metadata` for the file; returns its sha256."""
        digest = hashlib.sha256(metadata).hexdigest()
        await asyncio.to_thread(self._disk.set, file_sha256, (digest, metadata))
        return digest
