"""Delivery records: which sources have delivered the bytes of a digest, as the proxy verified.

A digest says what bytes are, not who may have them, and a listing proves nothing (GitLab stores
the sha256 an upload claims; a public page may list any digest). So read rights attach to
deliveries: source S delivered D once the proxy downloaded bytes from S that hashed to D. Cached
bytes go to a reader only if a source it may read delivered them (gitlab_pypi_proxy.index.files);
else its own source is asked and the bytes hashed (`verify`): a mismatch is a forged listing
(NotAsListed, logged once) and nothing cached is sent. The records are index records, shared by
workers and replicas, and only grow: one lost to a race costs one more verification, never a
wrong answer. A verification runs once per (digest, source, file name), under the digest's lock."""

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack

from gitlab_pypi_proxy.aio import SingleFlight, TTLMemo
from gitlab_pypi_proxy.errors import NotAsListed
from gitlab_pypi_proxy.model import FileStream
from gitlab_pypi_proxy.storage.blobs import CacheUnwritable
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.records import RecordStore

log = logging.getLogger("proxy.cache.files")

Opener = Callable[[], AbstractAsyncContextManager[FileStream]]
_REMEMBERED = 4096  # digests whose record this process holds in memory (~450 bytes each)


def delivery_key(sha256: str) -> tuple[str, str]:
    """The record of the sources that delivered digest `sha256`."""
    return ("delivered", sha256)


def delivered_sha256(key: object) -> str | None:
    """The digest whose delivery record `key` is, or None when it is no such record."""
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "delivered":
        return str(key[1])
    return None


def _sources(entry: object) -> frozenset[str] | None:
    if isinstance(entry, Entry) and isinstance(entry.value, frozenset):
        return entry.value
    return None


class Deliveries:
    def __init__(self, records: RecordStore, coordinator: Coordinator) -> None:
        self.records, self.coordinator = records, coordinator
        self._known: TTLMemo[str, frozenset[str]] = TTLMemo(_REMEMBERED)
        self._flights: SingleFlight[tuple[str, str, str], None] = SingleFlight()

    def known(self, sha256: str) -> frozenset[str]:
        """The sources this process has seen deliver `sha256` (no I/O: true, maybe not all)."""
        return self._known.get(sha256, frozenset())

    async def sources(self, sha256: str) -> frozenset[str] | None:
        """The sources that delivered `sha256`, as recorded; None when there is no record at all
        (a file cached before delivery records existed, or imported without them)."""
        found = _sources(await self.records.get(delivery_key(sha256)))
        if found is not None:
            self._known.set(sha256, found | self.known(sha256))
        return found

    async def delivered_by(self, sha256: str, source: str) -> bool:
        """Has `source` delivered `sha256`?"""
        return source in self.known(sha256) or source in (await self.sources(sha256) or ())

    async def add(self, sha256: str, source: str) -> None:
        """Record that `source` delivered `sha256` (call it holding the digest's lock, as a
        download and a verification do, so that writers of one record take turns)."""
        recorded = await self.sources(sha256) or frozenset()
        if source not in recorded:
            await self.records.put(delivery_key(sha256), Entry(recorded | {source}, time.time()))
        self._known.set(sha256, recorded | self.known(sha256) | {source})

    def add_now(self, sha256: str, sources: Iterable[str]) -> None:
        """`add`, for the command line (blocking): a bundle's records."""
        key = delivery_key(sha256)
        recorded = _sources(self.records.get_now(key)) or frozenset()
        union = recorded | frozenset(sources)
        if union != recorded:
            self.records.keep(key, Entry(union, time.time()))

    async def verify(
        self, sha256: str, source: str, filename: str, opener: Opener, size: int | None = None
    ) -> None:
        """Make sure `source` delivered `sha256`: if no record says so, download the file with
        `opener` (its bytes are hashed, not kept) and record it when they match. `size`: the
        bytes of that digest, as cached: an answer of another size is refused as soon as it
        shows (its announced length, or more bytes than that).

        Raises NotAsListed when they do not match, and whatever `opener` raises
        (FileNotFoundUpstream, SourceUnavailable, a look-ahead's Declined)."""
        if source in self.known(sha256):
            return
        await self._flights.run(
            (sha256, source, filename),
            lambda: self._verify(sha256, source, filename, opener, size),
        )

    async def _verify(
        self, sha256: str, source: str, filename: str, opener: Opener, size: int | None
    ) -> None:
        if await self.delivered_by(sha256, source):
            return
        async with await self._locked(sha256):
            if await self.delivered_by(sha256, source):  # another worker verified it meanwhile
                return
            digest, received = hashlib.sha256(), 0
            async with opener() as stream:
                if size is not None and stream.size is not None and stream.size != size:
                    raise _refused(source, filename, sha256, f"{stream.size} bytes, not {size}")
                async for chunk in stream.chunks:
                    received += len(chunk)
                    if size is not None and received > size:
                        raise _refused(source, filename, sha256, f"more than {size} bytes")
                    await asyncio.to_thread(digest.update, chunk)
            if digest.hexdigest() != sha256:
                raise _refused(source, filename, sha256, f"bytes hashing to {digest.hexdigest()}")
            await self.add(sha256, source)

    async def _locked(self, sha256: str) -> AsyncExitStack:
        """The coordinator's lock of the digest, held by the returned stack; without it when it
        cannot be had (at worst, one more verified download)."""
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.coordinator.lock(sha256))
        except (OSError, CacheUnwritable) as exc:
            log.info("verifying %s without the lock: %s", sha256, exc)
        return stack


def _refused(source: str, filename: str, sha256: str, found: str) -> NotAsListed:
    """The one warning of a failed verification, and the error the reader is told."""
    log.warning(
        "source %s lists %s with sha256 %s but sends %s: nothing cached is served for it "
        "(sha256 does not match its listing)",
        source,
        filename,
        sha256,
        found,
    )
    return NotAsListed(source, filename)
