"""An open entry of the local blob store (a Blob, gitlab_pypi_proxy.storage.blobs) and its bytes on
the way out, checked against the sha256 it is kept under.

A stored file can change under the proxy (a flipped bit, a stray write): size changes are caught
at lookup, other damage only by hashing. Each worker hashes an entry as it first serves it, the
last piece held back until it matches (on a mismatch the response is cut short of its
Content-Length and the entry dropped: no client gets a whole wrong file), and remembers the
file's identity (inode, ctime, size) so later hits cost nothing. A small file is read and hashed
at lookup: a corrupt one is a miss. Once hashed, a piece the page cache holds is read on the
event loop with `RWF_NOWAIT` (no thread hop); any other piece is read in a thread."""

import asyncio
import errno
import hashlib
import io
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import BinaryIO

SERVE_CHUNK = 1024 * 1024  # one read each; files up to this size are read at lookup
TAIL_BYTES = 64 * 1024  # a tail up to this size is read with the piece before it
_NOWAIT_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
_nowait = getattr(os, "RWF_NOWAIT", 0)  # 0 once the system has said it cannot


def read_if_cached(fd: int, position: int, length: int) -> bytes | bytearray:
    """As much of `length` bytes at `position` as the page cache holds, without ever waiting for
    the disk (safe on the event loop): fewer bytes, or none, when the rest is not in memory."""
    global _nowait
    if not _nowait:
        return b""
    buffer = bytearray(length)
    try:
        got = os.preadv(fd, [buffer], position, _nowait)
    except BlockingIOError:
        return b""
    except OSError as exc:
        if exc.errno in _NOWAIT_UNSUPPORTED:  # this kernel or file system: threads from now on
            _nowait = 0
        return b""
    if got < length:
        del buffer[got:]
    return buffer


class CorruptEntry(Exception):
    """A cached file's bytes no longer hash to its sha256; the entry has been dropped."""


@dataclass(frozen=True)
class Check:
    """What the store does once an unverified entry's bytes are hashed (called in a thread)."""

    passed: Callable[[], None]
    failed: Callable[[str], None]  # with the digest found; drops the entry and logs


@dataclass(eq=False)
class CachedFile:
    """An open cache entry: reading it is safe even if it is evicted meanwhile."""

    sha256: str
    size: int
    mtime: float
    handle: BinaryIO | None  # None when `data` holds the whole file
    data: bytes | None = None  # a small file, read (and checked) at lookup
    check: Check | None = None  # set while this process has not seen these bytes hash right
    released: Callable[[], None] | None = None  # tells the store it is no longer served
    path: str | None = None  # where it lies under the store's `files` directory

    @property
    def holds_resources(self) -> bool:
        """An open file to close; a small file read whole at lookup holds none."""
        return self.handle is not None or self.released is not None

    def reader(self) -> BinaryIO:
        """The bytes from the start, unchecked (blocking reads: export, verify)."""
        if self.handle is None:
            return io.BytesIO(self.data or b"")
        self.handle.seek(0)
        return self.handle

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.released is not None:
            self.released()
            self.released = None

    async def local_path(self) -> str | None:
        if self.check is not None:
            try:
                if self.data is not None:
                    await asyncio.to_thread(self.check_data)
                else:
                    await asyncio.to_thread(self._verify_whole, self.check)
            except CorruptEntry:
                return None
        return self.path

    def check_data(self) -> None:
        """Hash a small file read at lookup, if unchecked (blocking); raises CorruptEntry."""
        if self.check is not None and self.data is not None:
            digest = hashlib.sha256(self.data)
            self._conclude(digest, self.check)

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start`..`end` (inclusive); raises CorruptEntry before the last piece of a
        file that does not hash right, and OSError if the file is shorter than recorded."""
        if self.data is not None:
            yield self.data[start : end + 1]
            return
        check = self.check
        if check is not None and (start, end) != (0, self.size - 1):
            await asyncio.to_thread(self._verify_whole, check)
            check = None
        digest = hashlib.sha256() if check is not None else None
        position = start
        while position <= end:
            left = end - position + 1
            length = left if left <= SERVE_CHUNK + TAIL_BYTES else SERVE_CHUNK
            chunk: bytes | bytearray = b""
            if digest is None:  # hashing is for a thread; a memory copy is not
                assert self.handle is not None
                chunk = read_if_cached(self.handle.fileno(), position, length)
            if len(chunk) != length:
                chunk = await asyncio.to_thread(self._read, position, length, digest, check)
            position += len(chunk)
            yield chunk

    def _read(
        self, position: int, length: int, digest: "hashlib._Hash | None", check: Check | None
    ) -> bytes:
        assert self.handle is not None
        chunk = os.pread(self.handle.fileno(), length, position)
        if len(chunk) != length:
            raise OSError(f"cache entry {self.sha256} shorter than recorded")
        if digest is not None and check is not None:
            digest.update(chunk)
            if position + length == self.size:
                self._conclude(digest, check)
        return chunk

    def _verify_whole(self, check: Check) -> None:
        digest = hashlib.sha256()
        for position in range(0, self.size, SERVE_CHUNK):
            length = min(SERVE_CHUNK, self.size - position)
            self._read(position, length, digest, check)
        if self.size == 0:
            self._conclude(digest, check)

    def _conclude(self, digest: "hashlib._Hash", check: Check) -> None:
        found = digest.hexdigest()
        if found != self.sha256:
            check.failed(found)
            raise CorruptEntry(f"cache entry {self.sha256} is corrupt: its bytes hash to {found}")
        check.passed()
        self.check = None


def read_whole(handle: BinaryIO, size: int) -> bytes:
    """A small entry's bytes (blocking); OSError if shorter than recorded."""
    data = os.pread(handle.fileno(), size, 0) if size else b""
    if len(data) != size:
        raise OSError("cache entry shorter than recorded")
    return data
