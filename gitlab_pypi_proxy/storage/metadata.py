"""Core metadata (PEP 658) cache: a wheel's METADATA bytes and their sha256, by the wheel's sha256.

Small entries in diskcache, shared by every worker and kept across restarts. Digest and bytes are
one entry, so eviction can never leave an advertised digest without its body. While the cache
directory cannot be written, new entries are held in this process instead (bounded), so a page
never advertises metadata that its sidecar URL then cannot serve.
"""

import asyncio
import hashlib
from collections.abc import Iterable
from pathlib import Path

import diskcache

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

_SIZE_LIMIT = 2**30
_UNKEPT_ENTRIES = 1_000


class MetadataStore:
    def __init__(self, directory: Path) -> None:
        self._disk = diskcache.Cache(
            str(directory / "metadata"),
            size_limit=_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
        )
        self._writes = writes_for(directory)
        # What the disk would not take, oldest first; touched on the event loop only.
        self._unkept: TTLMemo[str, tuple[str, bytes]] = TTLMemo(_UNKEPT_ENTRIES)

    def close(self) -> None:
        self._disk.close()

    async def digests(self, file_sha256s: Iterable[str]) -> dict[str, str]:
        """file sha256 → metadata sha256, for the files whose metadata is stored."""
        wanted = list(file_sha256s)
        found = await asyncio.to_thread(self._digests, wanted)
        for sha256 in wanted if self._unkept else ():  # a page's wheels: a loop only if need be
            held = self._unkept.get(sha256) if sha256 not in found else None
            if held is not None:
                found[sha256] = held[0]
        return found

    def _digests(self, wanted: list[str]) -> dict[str, str]:
        found = {}
        for sha256 in wanted:
            entry = self._disk.get(sha256)
            if entry is not None:
                found[sha256] = entry[0]
        return found

    async def get(self, file_sha256: str) -> bytes | None:
        entry = await asyncio.to_thread(self._disk.get, file_sha256)
        if entry is None:
            entry = self._unkept.get(file_sha256)
        return entry[1] if entry is not None else None

    async def put(self, file_sha256: str, metadata: bytes) -> str:
        """Keep `metadata` for the file; returns its sha256."""
        digest = hashlib.sha256(metadata).hexdigest()
        try:
            await asyncio.to_thread(self._disk.set, file_sha256, (digest, metadata))
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "keeping core metadata")
            self._unkept.set(file_sha256, (digest, metadata))
        return digest
