"""Getting a file into the blob store: verified before it is kept, once however many ask.

A download runs once per file, as a task of its own (single-flight here, the coordinator's lock
per digest across workers), writing a spool while hashing it. Every client follows the spool as
it grows, so latecomers get the whole body and a client hanging up does not stop it. The last
bytes are held back until the sha256 is checked: no client ever receives a complete wrong file,
and nothing wrong is kept; the verified source is recorded as having delivered it
(gitlab_pypi_proxy.storage.deliveries). A byte range of a download under way is read from the
spool unverified, as its upstream would serve it. A store that cannot take files degrades
instead of failing: the file streams verified, unkept; the whole size is reserved before the
first byte goes out, and a write failing midway leaves each follower to fetch the rest itself,
checked against what it sent. Disk I/O and hashing run in threads."""

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any, BinaryIO

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import SingleFlight
from gitlab_pypi_proxy.errors import HashMismatch
from gitlab_pypi_proxy.storage.blobs import Blob, BlobStore, CacheUnwritable, Spool
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.deliveries import Deliveries, Opener
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS

log = logging.getLogger("proxy.cache.files")

CHUNK = 256 * 1024


class Declined(Exception):
    """An opener that only takes some files (a look-ahead) did not take this one, before its
    first byte: whoever joined the download starts one of its own (`Downloads.started`)."""


class Download:
    """One upstream download, followed by any number of readers."""

    def __init__(self, sha256: str, reopen: Callable[[], Blob | None], opener: Opener) -> None:
        self.sha256, self._reopen, self._opener = sha256, reopen, opener
        self.spool: Spool | None = None  # made once the download is sure to run
        self.size: int | None = None  # as announced by the upstream
        self.written = 0
        self.done = False
        self.error: BaseException | None = None  # the bytes written will never be whole
        self.unkept: CacheUnwritable | None = None  # whole and verified, but the store refused it
        # the source read, once started; None when the store had the file already (no source
        # delivered anything here: readers check the delivery records instead)
        self.source: str | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Event()

    def notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    @property
    def readable(self) -> int:
        # Hold back the last byte until the digest is checked: a wrong file never arrives whole.
        return self.written if self.done and self.error is None else max(0, self.written - 1)

    def _open_reader(self) -> BinaryIO | None:
        """The spool as written so far; None once it is gone (put into the store, or dropped)."""
        try:
            return open(self.spool.path, "rb") if self.spool is not None else None
        except FileNotFoundError:
            return None

    async def follow(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive. Should the store stop taking them midway (or drop
        them before this reader opened them), the rest comes from upstream and the body goes on
        whole; any other failure of the download is raised."""
        # Until it starts, the spool may still be swapped for a stored blob. Shielded: this
        # follower going away must not cancel the start every follower waits for.
        await asyncio.shield(self.started)
        handle = await asyncio.to_thread(self._open_reader)
        if handle is None and self.error is None:
            # Joined just as the download ended, or another worker had the file: the store has it
            blob = await self._stored()
            if blob is not None:
                try:
                    async for chunk in blob.chunks(0, blob.size - 1):
                        yield chunk
                finally:
                    await asyncio.to_thread(blob.close)
                return
        position = 0
        try:
            while handle is not None and not (self.done and position >= self.readable):
                if position < self.readable:
                    length = min(CHUNK, self.readable - position)
                    chunk = await asyncio.to_thread(os.pread, handle.fileno(), length, position)
                    if not chunk:
                        raise OSError(f"download of {self.sha256} shorter than written")
                    position += len(chunk)
                    yield chunk
                else:
                    await self._progress.wait()
            if handle is not None and self.error is None:
                return
            if self.error is not None and not isinstance(self.error, CacheUnwritable):
                raise self.error
            async for chunk in self._rest_from_upstream(position, handle):
                yield chunk
        finally:
            if handle is not None:
                await asyncio.to_thread(handle.close)

    async def range(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (inclusive) of the file, from the spool as soon as they are
        written (or from the store once it holds the file). Raises why the download failed when
        it fails before they are written."""
        await asyncio.shield(self.started)
        handle = await asyncio.to_thread(self._open_reader)
        if handle is None and self.error is None:
            blob = await self._stored()
            if blob is not None:
                try:
                    async for chunk in blob.chunks(start, end):
                        yield chunk
                finally:
                    await asyncio.to_thread(blob.close)
                return
        if handle is None:
            raise self.error or OSError(f"download of {self.sha256} is gone")
        try:
            while self.readable <= end:
                if self.done:
                    raise self.error or OSError(f"download of {self.sha256} ended short")
                await self._progress.wait()
            position = start
            while position <= end:
                length = min(CHUNK, end + 1 - position)
                chunk = await asyncio.to_thread(os.pread, handle.fileno(), length, position)
                if not chunk:
                    raise OSError(f"download of {self.sha256} shorter than written")
                position += len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def _stored(self) -> Blob | None:
        """The file from the store, once this download has put it there: its spool is gone
        from the moment the store takes it (a rename) until the store lists it (a row written
        after), and a follower that looked in between would have asked the upstream again.
        None when the store does not have it once the download has ended (not kept, evicted)."""
        blob = await asyncio.to_thread(self._reopen)
        if blob is not None:
            return blob
        await self._ended()
        return await asyncio.to_thread(self._reopen)

    async def _rest_from_upstream(
        self, position: int, sent: BinaryIO | None
    ) -> AsyncIterator[bytes]:
        """The bytes after `position` straight from upstream, unkept. The upstream's first
        `position` bytes must be those already sent (read back from `sent`) and the whole must
        hash to the digest, or the body is cut."""
        if position:
            log.info("file %s: unkept after byte %d, the rest from upstream", self.sha256, position)
        async with self._opener() as stream:
            offset = 0  # bytes of this answer seen so far
            async for chunk in verified(stream.chunks, self.sha256):
                start, offset = offset, offset + len(chunk)
                if start < position and sent is not None:
                    seen = chunk[: position - start]
                    before = await asyncio.to_thread(os.pread, sent.fileno(), len(seen), start)
                    if before != seen:
                        raise HashMismatch("the upstream sent other bytes than the first time")
                    chunk = chunk[len(seen) :]
                if chunk:
                    yield chunk

    async def wait(self, progress: Callable[[int], None] | None = None) -> None:
        """Until the file is kept (or not: raises why), without reading it.

        `progress` is called with the number of bytes received since its last call.
        """
        await self._ended(progress)
        if self.error is not None:
            raise self.error
        if self.unkept is not None:
            raise self.unkept

    async def _ended(self, progress: Callable[[int], None] | None = None) -> None:
        """Until the download has ended, however it ended (`wait` says how)."""
        reported = 0
        while True:
            event = self._progress  # taken before the check: a notify in between sets it
            if progress is not None and self.written > reported:
                progress(self.written - reported)
                reported = self.written
            if self.done:
                return
            await event.wait()


class Downloads:
    """The downloads of this process into `blobs`, coordinated with the other workers."""

    def __init__(self, blobs: BlobStore, coordinator: Coordinator, deliveries: Deliveries) -> None:
        self.blobs, self.coordinator, self.deliveries = blobs, coordinator, deliveries
        # the downloads under way, each with its Download for the followers
        self._downloads: SingleFlight[str, None] = SingleFlight(metrics.FILE_JOIN.inc)

    def under_way(self, sha256: str) -> Download | None:
        """The download of `sha256` running in this process, if one does."""
        return self._downloads.handle(sha256)

    def download(self, sha256: str, opener: Opener) -> Download:
        """The running download of `sha256`, started with `opener` if there is none."""
        download = self._downloads.handle(sha256)
        if download is None:
            download = Download(sha256, lambda: self.blobs.open_now(sha256), opener)
        self._downloads.start(sha256, lambda: self._run(download, opener), download)
        return download

    async def started(self, sha256: str, opener: Opener) -> Download:
        """The download of `sha256` once its size is known, started with `opener` if none runs.
        Raises what its start raised; a look-ahead that declined is followed by one with
        `opener`, which the look-ahead's end has made room for."""
        download = self.download(sha256, opener)
        try:
            await asyncio.shield(download.started)
        except Declined:
            download = self.download(sha256, opener)
            await asyncio.shield(download.started)
        return download

    async def _run(self, download: Download, opener: Opener) -> None:
        digest = hashlib.sha256()
        try:
            async with await self._exclusive(download.sha256, lambda: download.written):
                cached = await self.blobs.open(download.sha256, count=False)
                if cached is not None:  # another worker kept it while this one waited
                    download.size = download.written = cached.size
                    await asyncio.to_thread(cached.close)
                    download.started.set_result(None)
                    return
                spool = download.spool = await self._spool(download.sha256)
                try:
                    async with opener() as stream:
                        await self.blobs.reserve(spool, stream.size)
                        download.size, download.source = stream.size, stream.source
                        download.started.set_result(None)
                        async for chunk in stream.chunks:
                            await self._disk_write(_write, spool.handle, digest, chunk)
                            download.written = spool.written = download.written + len(chunk)
                            download.notify()
                        await self._disk_write(_flush, spool.handle)
                    if stream.size is not None and download.written != stream.size:
                        raise HashMismatch(f"got {download.written} of {stream.size} bytes")
                    if digest.hexdigest() != download.sha256:
                        raise HashMismatch(f"content hashes to {digest.hexdigest()}")
                    if download.source is not None:
                        await self.deliveries.add(download.sha256, download.source)
                    try:
                        await asyncio.to_thread(self.blobs.put, spool)
                    except WRITE_ERRORS as exc:
                        # Whole and verified: the followers finish from the spool they hold open.
                        download.unkept = self.blobs.failed(exc, "keeping a file")
                finally:
                    await asyncio.to_thread(self.blobs.discard, spool)
        except BaseException as exc:
            download.error = exc
            if not download.started.done():
                download.started.set_exception(exc)
                download.started.exception()  # a caller may never look
            if isinstance(exc, HashMismatch):
                log.error("file %s not kept: %s", download.sha256, exc)
            elif not isinstance(exc, Exception):
                raise
        finally:
            download.done = True
            self._downloads.finish(download.sha256)  # a later caller downloads anew
            download.notify()

    async def _exclusive(self, sha256: str, progress: Callable[[], int]) -> AsyncExitStack:
        """The coordinator's lock on this digest, held by the returned stack; `progress`: the
        bytes downloaded so far (another replica waits while they grow)."""
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.coordinator.lock(sha256, progress))
        except OSError as exc:
            raise self.blobs.failed(exc, "keeping a file") from None
        return stack

    async def _spool(self, sha256: str) -> Spool:
        try:
            return await asyncio.to_thread(self.blobs.spool, sha256)
        except OSError as exc:
            raise self.blobs.failed(exc, "keeping a file") from None

    async def _disk_write(self, write: Callable[..., None], *args: Any) -> None:
        try:
            await asyncio.to_thread(write, *args)
        except OSError as exc:
            raise self.blobs.failed(exc, "keeping a file") from None

    def add(self, sha256: str, source: BinaryIO) -> int:
        """Copy `source` into the store if its bytes hash to `sha256` (blocking: for the CLI).

        Returns its size, kept unless the store will not hold it (or evicted meanwhile: look);
        raises HashMismatch (and keeps nothing) when it does not hash right.
        """
        with self.coordinator.lock_now(sha256):  # a download of it elsewhere
            spool = self.blobs.spool(sha256)
            digest = hashlib.sha256()
            try:
                while chunk := source.read(CHUNK * 4):
                    _write(spool.handle, digest, chunk)
                    spool.written += len(chunk)
                _flush(spool.handle)
                if digest.hexdigest() != sha256:
                    raise HashMismatch(f"content hashes to {digest.hexdigest()}")
                self.blobs.put(spool)
                return spool.written
            finally:
                self.blobs.discard(spool)


def _write(handle: BinaryIO, digest: "hashlib._Hash", chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:  # an unbuffered write may take fewer bytes than it is given
        view = view[handle.write(view) :]
    digest.update(chunk)


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


async def verified(chunks: AsyncIterator[bytes], sha256: str) -> AsyncIterator[bytes]:
    """`chunks` passed through unkept, the last one held back until the whole hashes to `sha256`:
    on a mismatch the client never receives a complete wrong file."""
    digest = hashlib.sha256()
    held: bytes | None = None
    async for chunk in chunks:
        await asyncio.to_thread(digest.update, chunk)
        if held is not None:
            yield held
        held = chunk
    if digest.hexdigest() != sha256:
        raise HashMismatch(f"content hashes to {digest.hexdigest()}")
    if held is not None:
        yield held
