"""Core metadata (PEP 658): a wheel's METADATA bytes and their sha256, by the source whose bytes
they were read from and the wheel's sha256.

Keyed by source, because what one source's bytes say belongs to that source alone: METADATA
read by ranges is not checked against the wheel's digest, and one read from the cached file
belongs to the sources that delivered it (gitlab_pypi_proxy.storage.deliveries); a forged
listing of a digest never gets another source's metadata. Digest and bytes are one entry (the
sha256 in hex, then the bytes, under a JSON key), so eviction never leaves an advertised digest
without its body. A cache of another format version is emptied when opened (read again from the
wheels); an entry that cannot be read is dropped. While the disk will not take an entry, it is
held in this process (bounded), so a page never advertises metadata its sidecar cannot serve."""

import asyncio
import hashlib
from collections.abc import Iterable
from pathlib import Path

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.names import is_sha256
from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.record_format import BadRecord, dropped, encode_key
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

_SIZE_LIMIT = 2**30
Key = tuple[str, str]  # (source name, file sha256)
_UNKEPT_ENTRIES = 1_000
_FORMAT = 1
_DIGEST = 64  # the hex characters of a sha256


class MetadataStore:
    def __init__(self, directory: Path) -> None:
        self._disk = open_cache(
            directory / "metadata",
            _FORMAT,
            size_limit=_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
        )
        self._writes = writes_for(directory)
        # What the disk would not take, oldest first; touched on the event loop only.
        self._unkept: TTLMemo[Key, tuple[str, bytes]] = TTLMemo(_UNKEPT_ENTRIES)

    def close(self) -> None:
        self._disk.close()

    async def digests(self, keys: Iterable[Key]) -> dict[Key, str]:
        """(source, file sha256) → metadata sha256, for the files whose metadata is stored."""
        wanted = list(keys)
        found = await asyncio.to_thread(self._digests, wanted)
        for key in wanted if self._unkept else ():  # a page's wheels: a loop only if need be
            held = self._unkept.get(key) if key not in found else None
            if held is not None:
                found[key] = held[0]
        return found

    def _digests(self, wanted: list[Key]) -> dict[Key, str]:
        found = {}
        for key in wanted:
            entry = self._entry(key)
            if entry is not None:
                found[key] = entry[0]
        return found

    def _entry(self, key: Key) -> tuple[str, bytes] | None:
        """(metadata sha256, metadata) stored for `key` (blocking); None when there is none or
        it cannot be read (then it is dropped)."""
        data = self._disk.get(encode_key(key))
        if data is None:
            return None
        digest = data[:_DIGEST].decode("ascii", "replace") if isinstance(data, bytes) else ""
        if not is_sha256(digest):
            dropped("metadata", BadRecord("an entry of another format"))
            self._disk.delete(encode_key(key))
            return None
        return digest, data[_DIGEST:]

    async def get(self, source: str, file_sha256: str) -> bytes | None:
        """The metadata read from `source`'s bytes of the file, or None."""
        key = (source, file_sha256)
        entry = await asyncio.to_thread(self._entry, key)
        if entry is None:
            entry = self._unkept.get(key)
        return entry[1] if entry is not None else None

    async def drop(self, sources: Iterable[str], file_sha256: str) -> None:
        """Forget the metadata of the file with that digest, as any of `sources` read it."""
        keys = [(source, file_sha256) for source in sources]
        for key in keys:
            self._unkept.pop(key, None)
        await asyncio.to_thread(lambda: [self._disk.delete(encode_key(key)) for key in keys])

    async def put(self, source: str, file_sha256: str, metadata: bytes) -> str:
        """Keep `metadata`, read from `source`'s bytes of the file; returns its sha256."""
        digest = hashlib.sha256(metadata).hexdigest()
        key = (source, file_sha256)
        try:
            await asyncio.to_thread(self._disk.set, encode_key(key), digest.encode() + metadata)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "keeping core metadata")
            self._unkept.set(key, (digest, metadata))
        return digest
