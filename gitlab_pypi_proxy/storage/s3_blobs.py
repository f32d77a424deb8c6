"""The blob store in an S3-compatible bucket (gitlab_pypi_proxy.storage.blobs), through obstore.

Objects are `<prefix><sha256>`, content-addressed and never overwritten: a small file is one PUT
with `If-None-Match: *`, a larger one a multipart upload to `<prefix>incoming/` copied to its
address by a copy that refuses to overwrite (docs/s3-client.md); a refused put means another
replica stored the same verified bytes first. Reads stream in constant memory; a whole read of
an object not yet seen to hash right is hashed on the way, its last piece held back until it
matches (a corrupt object is deleted). A byte range is served unchecked (`cache verify`
rehashes all). The bucket failing never fails a read the upstream can answer: a miss, `keeping`
false a while, the file streamed verified, unkept. No eviction: the bucket's lifecycle rule
bounds it. Errors are obstore's first line (no key nor secret). Imported only with
`[storage] backend = "s3"`."""

import asyncio
import hashlib
import io
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.config import StorageConfig
from gitlab_pypi_proxy.storage.blobs import BlobEntry, BlobStats, CacheUnwritable, Spool
from gitlab_pypi_proxy.storage.cached_file import SERVE_CHUNK, CorruptEntry
from gitlab_pypi_proxy.storage.leftovers import discard_spool, new_spool, remove_orphans
from gitlab_pypi_proxy.storage.writable import PAUSE_SECONDS

log = logging.getLogger("proxy.cache.files")

SMALL_PUT = 8 * 2**20  # up to this, one conditional PUT (held in memory); past it, staged
_PART_CONCURRENCY = 2  # multipart parts in flight: +30 MiB at any size (docs/s3-client.md)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERIFIED_MEMORY = 16_384  # objects remembered as checked (~300 bytes each)
PRESIGN_SECONDS = 300
STATS_SECONDS = 60.0
# obstore raises its own classes and, for some, Python's built-in ones
_MISSING = (NotFoundError, FileNotFoundError)
_EXISTS = (AlreadyExistsError, FileExistsError)
_DENIED = (PermissionDeniedError, UnauthenticatedError, PermissionError)
_FAILED = (BaseError, OSError)


def describe(exc: BaseException) -> str:
    """obstore's message, first line only (the rest is its debug dump)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def open_bucket(storage: StorageConfig) -> S3Store:
    """An obstore client of the configured bucket."""
    endpoint = storage.endpoint_url
    settings: dict[str, Any] = {"region": storage.region}
    if endpoint:
        settings |= {"endpoint": endpoint, "virtual_hosted_style_request": False}
    if storage.access_key_id:
        settings |= {
            "access_key_id": storage.access_key_id,
            "secret_access_key": storage.secret_access_key,
        }
    return S3Store(
        storage.bucket,
        copy_if_not_exists="multipart",
        # A whole large file streams within one request: its time bound is the upstream's pace,
        # not a few seconds; a store that cannot be reached is found by the connect timeout.
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": "3s",
            "timeout": "3600s",
        },
        retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=5)},
        **settings,
    )


@dataclass(eq=False)
class S3Blob:
    """An open object. `data`: a small object read whole at lookup."""

    store: "S3BlobStore"
    sha256: str
    size: int
    mtime: float
    e_tag: str | None = None
    data: bytes | None = None
    unchecked: bool = False  # to hash on a whole read
    _first: Any = field(default=None, repr=False)  # the lookup's GET, for the first whole read

    @property
    def holds_resources(self) -> bool:
        return False  # an unread GET is dropped with the object

    async def local_path(self) -> None:
        return None  # in the bucket, not under the cache directory

    def close(self) -> None:
        self._first = None

    def reader(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        return io.BufferedReader(_ObjectReader(self.store.bucket, self.store.key(self.sha256)))

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        if self.data is not None:
            yield self.data[start : end + 1]
            return
        whole = (start, end) == (0, self.size - 1)
        result, self._first = (self._first if whole else None), None
        if result is None:
            key = self.store.key(self.sha256)
            result = await obstore.get_async(
                self.store.bucket, key, options={"range": (start, end + 1)}
            )
        digest = hashlib.sha256() if whole and self.unchecked else None
        held: bytes | None = None
        async for piece in result.stream(min_chunk_size=SERVE_CHUNK):
            chunk = bytes(piece)
            if digest is not None:
                await asyncio.to_thread(digest.update, chunk)
            if held is not None:
                yield held
            held = chunk
        if digest is not None:
            found = digest.hexdigest()
            await asyncio.to_thread(self.store.concluded, self.sha256, found, self.e_tag)
        if held is not None:
            yield held


class _ObjectReader(io.RawIOBase):
    """An object's bytes, seekable, for blocking readers (export, verify, a wheel's METADATA)."""

    def __init__(self, bucket: S3Store, key: str) -> None:
        self._file = obstore.open_reader(bucket, key, buffer_size=SERVE_CHUNK)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = bytes(self._file.read(len(view)))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class S3BlobStore:
    """The blobs in the configured bucket; spools under `<directory>/files/incoming`."""

    def __init__(self, storage: StorageConfig, directory: Path, *, count_hits: bool = True) -> None:
        self.config = storage
        self.bucket = open_bucket(storage)
        self._prefix = storage.prefix
        self._tmp = directory / "files" / "incoming"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._count_hits = count_hits
        self._hits = self._misses = 0
        self._until = 0.0  # monotonic: no new files are kept before then
        self._reason = ""
        self._lock = threading.Lock()
        self._verified: TTLMemo[str, str] = TTLMemo(_VERIFIED_MEMORY)  # sha256 → e_tag
        self._stats: tuple[float, BlobStats] | None = None

    def key(self, sha256: str) -> str:
        return f"{self._prefix}{sha256}"

    # --- state --------------------------------------------------------------------------------

    @property
    def keeping(self) -> bool:
        return time.monotonic() >= self._until

    def failed(self, exc: BaseException, what: str) -> CacheUnwritable:
        reason = describe(exc)
        with self._lock:
            first = self.keeping
            self._until = time.monotonic() + PAUSE_SECONDS
            self._reason = reason
        if first:
            log.warning(
                "S3 bucket %r failing (%s, while %s): serving files from upstream without "
                "keeping them for %ds",
                self.config.bucket,
                reason,
                what,
                PAUSE_SECONDS,
            )
        metrics.SHARED_FAILURES.labels("s3").inc()
        return CacheUnwritable(reason)

    def reachable(self) -> tuple[bool, str]:
        """As this process saw the bucket last: (answering, why not)."""
        return (True, "") if self.keeping else (False, self._reason)

    def problem(self) -> tuple[bool, str] | None:
        """Whether the bucket exists and takes writes (blocking: a probe put and deleted): None,
        or (fatal, what is wrong). Fatal: the bucket is missing or refuses this key; not: the
        store cannot be reached now (an outage: the proxy serves without it)."""
        where = f"S3 bucket {self.config.bucket!r} at {self.config.endpoint_url or 'AWS S3'}"
        probe = f"{self._prefix}incoming/probe-{secrets.token_hex(8)}"
        try:
            obstore.put(self.bucket, probe, b"probe")
            obstore.delete(self.bucket, probe)
        except _MISSING:
            return True, f"{where} does not exist (create it first)"
        except _DENIED as exc:
            return True, f"{where} refuses this key's writes: {describe(exc)}"
        except _FAILED as exc:
            self.failed(exc, "checking the bucket at start")
            return False, f"{where} cannot be reached: {describe(exc)}"
        return None

    # --- reading ------------------------------------------------------------------------------

    async def open(self, sha256: str, *, count: bool = True) -> S3Blob | None:
        if not self.keeping and count:
            blob = None  # the bucket failed a moment ago: the upstream serves, unkept
        else:
            blob = await self._open(sha256, count)
        if count and self._count_hits:
            if blob is None:
                self._misses += 1
            else:
                self._hits += 1
        return blob

    async def _open(self, sha256: str, count: bool) -> S3Blob | None:
        try:
            result = await obstore.get_async(self.bucket, self.key(sha256))
            meta = result.meta
            size, mtime = meta["size"], meta["last_modified"].timestamp()
            unchecked = count and self._verified.get(sha256) != meta["e_tag"]
            if size > SERVE_CHUNK:
                return S3Blob(
                    self, sha256, size, mtime, meta["e_tag"], unchecked=unchecked, _first=result
                )
            data = bytes(await result.bytes_async())
        except _MISSING:
            return None
        except _FAILED as exc:
            self.failed(exc, "looking a file up")
            return None
        if len(data) != size:
            log.error("S3 object %s has %d bytes, expected %d: a miss", sha256, len(data), size)
            return None
        if unchecked:
            found = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
            try:
                await asyncio.to_thread(self.concluded, sha256, found, meta["e_tag"])
            except CorruptEntry:
                return None
        return S3Blob(self, sha256, size, mtime, meta["e_tag"], data=data)

    def concluded(self, sha256: str, found: str, e_tag: str | None) -> None:
        """A whole read hashed to `found` (blocking): a corrupt object is deleted."""
        if found == sha256:
            if e_tag:
                self._verified.set(sha256, e_tag)
            return
        log.error("S3 object %s is corrupt (its bytes hash to %s): deleted", sha256, found)
        self._verified.pop(sha256, None)
        try:
            self.delete(sha256)
        except _FAILED as exc:
            log.warning("corrupt S3 object %s not deleted: %s", sha256, describe(exc))
        raise CorruptEntry(f"S3 object {sha256} is corrupt: its bytes hash to {found}")

    def open_now(self, sha256: str) -> S3Blob | None:
        try:
            meta = obstore.head(self.bucket, self.key(sha256))
        except _MISSING:
            return None
        return S3Blob(self, sha256, meta["size"], meta["last_modified"].timestamp(), meta["e_tag"])

    async def redirect_url(self, sha256: str) -> str | None:
        """A presigned GET of the object, valid for PRESIGN_SECONDS; None when the bucket does
        not hold it (or cannot say now: the proxy serves it then)."""
        if not self.keeping:
            return None
        try:
            await obstore.head_async(self.bucket, self.key(sha256))
        except _MISSING:
            return None
        except _FAILED as exc:
            self.failed(exc, "looking a file up")
            return None
        return await obstore.sign_async(
            self.bucket, "GET", self.key(sha256), timedelta(seconds=PRESIGN_SECONDS)
        )

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and self.open_now(sha256) is not None

    def _objects(self) -> Iterator[tuple[str, Any]]:
        for batch in obstore.list(self.bucket, prefix=self._prefix, chunk_size=1000):
            for meta in batch:
                name = meta["path"][len(self._prefix) :]
                if _SHA256.fullmatch(name):
                    yield name, meta

    def digests(self) -> Iterator[str]:
        return (name for name, _ in self._objects())

    def entries(self) -> Iterator[BlobEntry]:
        """A bucket keeps no access times: last use is when the object was stored."""
        for name, meta in self._objects():
            yield BlobEntry(name, meta["size"], meta["last_modified"].timestamp())

    def stats(self) -> BlobStats:
        """Listing the bucket: kept for STATS_SECONDS (the status page and /metrics ask)."""
        now = time.monotonic()
        if self._stats is None or now - self._stats[0] > STATS_SECONDS:
            self._stats = now, self._list_stats()
        listed = self._stats[1]
        return BlobStats(
            listed.entries, listed.bytes, listed.oldest, listed.newest, self._hits, self._misses
        )

    def _list_stats(self) -> BlobStats:
        entries = volume = 0
        oldest: float | None = None
        newest: float | None = None
        for _, meta in self._objects():
            entries, volume = entries + 1, volume + meta["size"]
            stored = meta["last_modified"].timestamp()
            oldest = stored if oldest is None else min(oldest, stored)
            newest = stored if newest is None else max(newest, stored)
        return BlobStats(entries, volume, oldest, newest)

    def delete(self, sha256: str) -> None:
        self._verified.pop(sha256, None)
        obstore.delete(self.bucket, self.key(sha256))

    # --- writing ------------------------------------------------------------------------------

    def spool(self, sha256: str) -> Spool:
        return new_spool(self._tmp, sha256)

    async def reserve(self, spool: Spool, size: int | None) -> None:
        spool.size = size  # no room to take: the bucket's lifecycle rule bounds it

    def put(self, spool: Spool) -> bool:
        key = self.key(spool.sha256)
        try:
            if spool.written <= SMALL_PUT:
                with open(spool.path, "rb") as source:
                    data = source.read()
                obstore.put(self.bucket, key, data, mode="create")
            else:
                self._put_staged(spool, key)
        except _EXISTS:
            pass  # another replica stored the same verified bytes first
        except _FAILED as exc:
            raise OSError(f"S3 bucket {self.config.bucket!r}: {describe(exc)}") from None
        self._verified.pop(spool.sha256, None)
        return True

    def _put_staged(self, spool: Spool, key: str) -> None:
        staging = f"{self._prefix}incoming/{secrets.token_hex(16)}"
        obstore.put(self.bucket, staging, Path(spool.path), max_concurrency=_PART_CONCURRENCY)
        try:
            obstore.copy(self.bucket, staging, key, overwrite=False)
        finally:
            try:
                obstore.delete(self.bucket, staging)
            except _FAILED as exc:  # the lifecycle rule removes it
                log.warning("S3 staging object not deleted: %s", describe(exc))

    def discard(self, spool: Spool) -> None:
        discard_spool(spool)

    def clean(self) -> tuple[int, int]:
        return remove_orphans(self._tmp)

    def close(self) -> None:
        pass
