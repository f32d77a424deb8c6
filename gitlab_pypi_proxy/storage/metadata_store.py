"""Core metadata (PEP 658): a wheel's METADATA bytes and their sha256, by the source whose bytes
they were read from and the wheel's sha256.

Keyed by source, because what one source's bytes say belongs to that source alone: METADATA
read by ranges is not checked against the wheel's digest, and one read from the cached file
belongs to the sources that delivered it (gitlab_pypi_proxy.storage.deliveries); a forged
listing of a digest never gets another source's metadata. Digest and bytes are one entry (the
sha256 in hex, then the bytes, under a JSON key), so eviction never leaves an advertised digest
without its body. A cache of another format version is emptied when opened (read again from the
wheels); an entry that cannot be read is dropped. While the disk will not take an entry, it is
held in this process (bounded), so a page never advertises metadata its sidecar cannot serve.

Beside the entries, each project's list of the keys it has metadata for (by the project in the
wheel's file name, updated in the entry's transaction): a page of thousands of wheels looks up
one list and then the few entries on it, not every wheel (a lookup each cost a big page's
rendering a tenth of a second). A key on the list whose entry went is simply not found."""

import asyncio
import hashlib
import json
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
_FORMAT = 2  # 2: with each project's list of keys
_DIGEST = 64  # the hex characters of a sha256
_LISTED = 5_000  # keys on a project's list at most, the latest kept


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

    async def digests(self, keys: Iterable[Key], project: str | None) -> dict[Key, str]:
        """(source, file sha256) → metadata sha256, for the files whose metadata is stored: of
        `keys`, those on the list of `project` (normalized: a page's files), or, with None,
        each key looked up (a few keys)."""
        wanted = list(keys)
        found = await asyncio.to_thread(self._digests, wanted, project)
        for key in wanted if self._unkept else ():  # a page's wheels: a loop only if need be
            held = self._unkept.get(key) if key not in found else None
            if held is not None:
                found[key] = held[0]
        return found

    def _digests(self, wanted: list[Key], project: str | None) -> dict[Key, str]:
        if project is not None:
            listed = set(self._listed(project))
            wanted = [key for key in wanted if key in listed]
        found = {}
        for key in wanted:
            entry = self._entry(key)
            if entry is not None:
                found[key] = entry[0]
        return found

    def _listed(self, project: str) -> list[Key]:
        """The keys on `project`'s list (blocking)."""
        data = self._disk.get(_list_key(project))
        if data is None:
            return []
        try:
            pairs = json.loads(data)
            return [(str(source), str(sha256)) for source, sha256 in pairs]
        except (ValueError, TypeError) as exc:
            dropped("metadata", BadRecord(f"a project's list of another format: {exc}"))
            self._disk.delete(_list_key(project))
            return []

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

    async def put(self, source: str, file_sha256: str, metadata: bytes, project: str) -> str:
        """Keep `metadata`, read from `source`'s bytes of a file of `project` (normalized, as
        its file name says); returns its sha256."""
        digest = hashlib.sha256(metadata).hexdigest()
        key = (source, file_sha256)
        try:
            await asyncio.to_thread(self._keep, key, digest.encode() + metadata, project)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "keeping core metadata")
            self._unkept.set(key, (digest, metadata))
        return digest

    def _keep(self, key: Key, entry: bytes, project: str) -> None:
        with self._disk.transact():
            self._disk.set(encode_key(key), entry)
            listed = self._listed(project)
            if key not in listed:
                listed = [*listed[-(_LISTED - 1) :], key]
                self._disk.set(_list_key(project), json.dumps(listed, separators=(",", ":")))


def _list_key(project: str) -> str:
    """A project's list's key: three parts, where an entry's key has two."""
    return encode_key(("project", project, "keys"))
