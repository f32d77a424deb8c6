"""PEP 740 provenance objects a public index serves, by that index (source) and the sha256 of the
file they attest, with the result of verifying them once when they were kept. By source, because
an object is what that index says: another index listing the same digest gets its own, never
this one's. Small entries in diskcache, shared by every worker and kept across restarts, like the
core metadata (gitlab_pypi_proxy.storage.metadata_store).

An entry is plain bytes: a JSON line `[verified, detail]`, then the body as the index served it,
under a JSON key (gitlab_pypi_proxy.storage.record_format); a cache of another format version is
emptied when opened (the objects are fetched and verified again), one entry that cannot be read
is dropped.
"""

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.record_format import BadRecord, dropped, encode_key
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

_SIZE_LIMIT = 2**28
_FORMAT = 1


@dataclass(frozen=True)
class Kept:
    body: bytes  # as the index served it
    verified: bool
    detail: str  # gitlab_pypi_proxy.policy.attestations's "verified: ..." or "not verified: <why>"


class ProvenanceStore:
    def __init__(self, directory: Path) -> None:
        self._disk = open_cache(
            directory / "provenance",
            _FORMAT,
            size_limit=_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
        )
        self._writes = writes_for(directory)

    def close(self) -> None:
        self._disk.close()

    async def get(self, source: str, file_sha256: str) -> Kept | None:
        key = encode_key((source, file_sha256))
        data = await asyncio.to_thread(self._disk.get, key)
        if data is None:
            return None
        try:
            return _kept(data)
        except BadRecord as exc:
            dropped("provenance", exc)
            await asyncio.to_thread(self._disk.delete, key)
            return None

    async def drop(self, sources: Iterable[str], file_sha256: str) -> None:
        """Forget what any of `sources` attested of the file with that digest."""
        keys = [encode_key((source, file_sha256)) for source in sources]
        await asyncio.to_thread(lambda: [self._disk.delete(key) for key in keys])

    async def put(self, source: str, file_sha256: str, kept: Kept) -> None:
        """Keep it; a disk that will not take it only costs a fetch next time."""
        try:
            head = json.dumps([kept.verified, kept.detail]).encode()
            key = encode_key((source, file_sha256))
            await asyncio.to_thread(self._disk.set, key, head + b"\n" + kept.body)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "keeping provenance")


def _kept(data: object) -> Kept:
    """What `put` stored; raises BadRecord for anything else."""
    if not isinstance(data, bytes) or b"\n" not in data:
        raise BadRecord("an entry of another format")
    head, body = data.split(b"\n", 1)
    try:
        verified, detail = json.loads(head)
    except ValueError as exc:  # not JSON, or not a pair
        raise BadRecord(f"an entry of another format: {exc}") from None
    if not (isinstance(verified, bool) and isinstance(detail, str)):
        raise BadRecord("an entry of other types")
    return Kept(body, verified, detail)
