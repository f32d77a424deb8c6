"""Wheels whose METADATA is a decompression bomb, written by hand (local header, central
directory, end record) so that the directory declares whatever the test chooses.

The compressed streams are cheap to make and small to hold: deflate of zeros is one flushed
segment repeated (each decompresses to the same MiB), bz2 of zeros is compressed once per
process and kept.
"""

import bz2
import functools
import struct
import zlib
from zipfile import ZIP_BZIP2, ZIP_DEFLATED

BOMB = 64 * 2**20  # what each bomb decompresses to: far more than any METADATA cap
DECLARED = 1000  # what each bomb's directory says it decompresses to


@functools.lru_cache(maxsize=4)
def deflate_zeros(total: int) -> bytes:
    """A raw deflate stream of `total` zeros (a multiple of 1 MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(b"\0" * 2**20) + compressor.flush(zlib.Z_FULL_FLUSH)
    return segment * (total // 2**20) + compressor.flush()


@functools.lru_cache(maxsize=4)
def bz2_zeros(total: int) -> bytes:
    """A bz2 stream of `total` zeros."""
    compressor = bz2.BZ2Compressor(9)
    block = b"\0" * 2**24
    parts = [
        compressor.compress(block[: min(len(block), total - done)])
        for done in range(0, total, len(block))
    ]
    return b"".join(parts) + compressor.flush()


def archive(member: str, compressed: bytes, method: int, declared: int, crc: int = 0) -> bytes:
    """A zip of one member, already compressed with `method`, which its directory says is
    `declared` bytes long with CRC `crc`."""
    name = member.encode()
    local = struct.pack(
        "<4s5H3L2H",
        b"PK\x03\x04",
        20,
        0,
        method,
        0,
        0x21,
        crc,
        len(compressed),
        declared,
        len(name),
        0,
    )
    directory = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        20,
        20,
        0,
        method,
        0,
        0x21,
        crc,
        len(compressed),
        declared,
        len(name),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + name + compressed
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory) + len(name), len(body), 0
    )
    return body + directory + name + end


def wheel(
    name: str, version: str, metadata: bytes, method: int, declared: int, crc: int = 0
) -> tuple[str, bytes]:
    """(file name, bytes) of a wheel whose only member is its METADATA (see `archive`)."""
    member = f"{name}-{version}.dist-info/METADATA"
    return f"{name}-{version}-py3-none-any.whl", archive(member, metadata, method, declared, crc)


def bomb(name: str, version: str, method: int, total: int = BOMB) -> tuple[str, bytes]:
    """A wheel whose METADATA, declared DECLARED bytes, is `total` zeros compressed by `method`
    (ZIP_DEFLATED or ZIP_BZIP2)."""
    compressed = {ZIP_DEFLATED: deflate_zeros, ZIP_BZIP2: bz2_zeros}[method](total)
    return wheel(name, version, compressed, method, DECLARED)
