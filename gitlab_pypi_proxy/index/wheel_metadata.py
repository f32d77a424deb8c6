"""Read a wheel's `*.dist-info/METADATA` (PEP 658), from a local file or by HTTP range reads.

Range reads fetch the zip's tail (end of central directory and, usually, the directory itself),
then only the METADATA member, so a multi-GB wheel is never downloaded for a few KB. zipfile does
the parsing, over a sparse file that holds only the fetched ranges and names what it lacks.

A wheel no larger than the tail read is whole after it: `whole_or_tail` offers it as a file
stream (to be verified and kept like any download), else declines with the tail it read, which
`by_ranges` goes on from.

A wheel is untrusted input: zipfile finds the member, gitlab_pypi_proxy.zip_member decompresses
it in steps, to no more than its directory declares and never past MAX_METADATA (zipfile inflates
a bz2 member in one call whatever is declared: a 1.5 KB wheel would cost gigabytes).
"""

import asyncio
import io
import re
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import BinaryIO

from gitlab_pypi_proxy.model import FileStream
from gitlab_pypi_proxy.sources.base import RangeReader
from gitlab_pypi_proxy.storage.downloads import Declined
from gitlab_pypi_proxy.zip_member import read_member

MAX_METADATA = 4 * 2**20  # decompressed or not: real METADATA is a few KB
TAIL = 64 * 2**10 + 22 + 1024  # EOCD, a maximal zip comment, and usually the central directory
_MIN_FETCH = 64 * 2**10
_MAX_ROUNDS = 6
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_UNREADABLE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError)


class NoMetadata(Exception):
    """The wheel has no readable METADATA member (or is no zip at all)."""


class RangesUnsupported(Exception):
    """The upstream answered a Range request with the whole file (or not at all)."""


_METADATA = re.compile(r"[^/]+\.dist-info/METADATA")


def _member(archive: zipfile.ZipFile, filename: str) -> zipfile.ZipInfo:
    """The top-level `<name>-<version>.dist-info/METADATA`, preferring the wheel's own name."""
    candidates = [
        info
        for info in archive.infolist()
        if info.filename.endswith("/METADATA") and _METADATA.fullmatch(info.filename)
    ]
    if not candidates:
        raise NoMetadata(f"{filename} has no .dist-info/METADATA")
    prefix = "-".join(filename.split("-")[:2]).lower() + ".dist-info/"
    own = [c for c in candidates if c.filename.lower() == prefix + "metadata"]
    return (own or candidates)[0]


def from_file(handle: BinaryIO, filename: str) -> bytes:
    """METADATA of a wheel on disk, or in a SparseFile (blocking: run it in a thread)."""
    return _read(handle, _located(handle, filename), filename)


def _located(handle: BinaryIO, filename: str) -> zipfile.ZipInfo:
    """The METADATA member's entry, from the zip's central directory."""
    try:
        with zipfile.ZipFile(handle) as archive:
            return _member(archive, filename)
    except _UNREADABLE as exc:
        raise NoMetadata(f"{filename}: {exc}") from None


def _read(handle: BinaryIO, member: zipfile.ZipInfo, filename: str) -> bytes:
    try:
        return read_member(handle, member, MAX_METADATA)
    except _UNREADABLE as exc:
        raise NoMetadata(f"{filename}: {exc}") from None


@dataclass(frozen=True)
class Tail:
    """The end of a remote wheel: its bytes from `start` on, and the wheel's size."""

    start: int
    body: bytes
    size: int


class NotWhole(Declined):
    """The wheel is larger than the tail read: here is what was read of it."""

    def __init__(self, tail: Tail) -> None:
        super().__init__(f"{tail.size} bytes: more than one tail read")
        self.tail = tail


async def _tail(read: RangeReader, filename: str) -> Tail:
    body, content_range = await read(f"bytes=-{TAIL}")
    match = _CONTENT_RANGE.fullmatch(content_range or "")
    if match is None:
        raise RangesUnsupported(filename)
    return Tail(int(match.group(1)), body, int(match.group(3)))


@asynccontextmanager
async def whole_or_tail(read: RangeReader, filename: str) -> AsyncIterator[FileStream]:
    """A download opener: the wheel as a stream when one tail read holds all of it, else
    NotWhole with the tail. Any failure of the read declines too (the read's error its cause):
    a client that joined then downloads the file its own way, from every source it may use."""
    try:
        tail = await _tail(read, filename)
    except Exception as exc:
        raise Declined(f"{filename}: {exc}") from exc
    if tail.start != 0 or len(tail.body) != tail.size:
        raise NotWhole(tail)

    async def chunks() -> AsyncIterator[bytes]:
        yield tail.body

    yield FileStream(size=tail.size, chunks=chunks())


class _Missing(Exception):  # deliberately not an OSError: zipfile must not swallow it
    def __init__(self, offset: int, length: int) -> None:
        super().__init__(offset, length)
        self.offset, self.length = offset, length


class SparseFile(io.RawIOBase):
    """A read-only file of `size` bytes of which only some ranges are known."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ranges: list[tuple[int, bytes]] = []
        self.position = 0

    def add(self, offset: int, data: bytes) -> None:
        self.ranges.append((offset, data))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        for start, data in self.ranges:
            if start <= self.position and end <= start + len(data):
                chunk = data[self.position - start : end - start]
                self.position = end
                return chunk
        raise _Missing(self.position, end - self.position)

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _from_sparse(sparse: SparseFile, filename: str, found: list[zipfile.ZipInfo]) -> bytes:
    """`from_file` of the ranges read so far; the member's entry, once found, is kept in `found`:
    the central directory (thousands of entries in a big wheel) is parsed once, not again for
    each range the member's own bytes need."""
    handle: BinaryIO = sparse  # type: ignore[assignment]
    if not found:
        sparse.seek(0)
        found.append(_located(handle, filename))
    return _read(handle, found[0], filename)


async def by_ranges(read: RangeReader, filename: str, tail: Tail | None = None) -> bytes:
    """METADATA of a remote wheel, fetching only the ranges zipfile asks for (from `tail` on,
    when the tail was read already).

    Raises RangesUnsupported when the upstream ignores Range, NoMetadata when there is none.
    """
    tail = tail or await _tail(read, filename)
    sparse = SparseFile(tail.size)
    sparse.add(tail.start, tail.body)
    found: list[zipfile.ZipInfo] = []
    for _ in range(_MAX_ROUNDS):
        try:
            return await asyncio.to_thread(_from_sparse, sparse, filename, found)
        except _Missing as missing:
            start = missing.offset
            end = min(sparse.size, start + max(missing.length, _MIN_FETCH)) - 1
            if end - start + 1 > MAX_METADATA + TAIL:
                raise NoMetadata(f"{filename}: central directory too large to read") from None
            body, content_range = await read(f"bytes={start}-{end}")
            got = _CONTENT_RANGE.fullmatch(content_range or "")
            if got is None or int(got.group(1)) != start:
                raise RangesUnsupported(filename) from None
            sparse.add(start, body)
    raise NoMetadata(f"{filename}: too many range reads")
