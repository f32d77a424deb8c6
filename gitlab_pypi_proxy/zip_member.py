"""One member of a zip archive, decompressed in steps to no more than it declares and a bound.

zipfile inflates a member in as few calls as it can, whatever its directory declares: a bz2
member is decompressed whole in one call (a 1.5 KB member of zeros becomes 2 GiB), an LZMA
member's decoder allocates the dictionary its header asks for (4 GiB if it says so). A wheel's
METADATA and an OSV advisory come from others; here zipfile only finds the member, and its bytes
are read and decompressed a step at a time: what passes its declared size, or `limit`, stops
there. The bytes come from the member's local header on the handle given, so a handle that holds
only some ranges of the archive (index/wheel_metadata.py's sparse file) asks for just those.
"""

import bz2
import lzma
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name and extra field lengths
_STEP = 64 * 2**10  # decompressed bytes per step


class BadMember(ValueError):
    """A member that cannot be read within its bounds; the message is one line."""


def read_member(handle: BinaryIO, info: zipfile.ZipInfo, limit: int) -> bytes:
    """The member's bytes, checked against its CRC; raises BadMember when it declares more than
    `limit` bytes, decompresses past what it declares, or cannot be read."""
    if info.file_size > limit or info.compress_size > limit:
        size = max(info.file_size, info.compress_size)
        raise BadMember(f"{info.filename} of {size} bytes is too large")
    if info.flag_bits & 0x1:
        raise BadMember(f"{info.filename} is encrypted")
    handle.seek(info.header_offset)
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(
        handle.read(_LOCAL_HEADER.size).ljust(_LOCAL_HEADER.size, b"\0")
    )
    if signature != b"PK\x03\x04":
        raise BadMember(f"no local header for {info.filename}")
    handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    compressed = handle.read(info.compress_size)
    data = bytearray()
    try:
        for piece in _decompressed(info.compress_type, compressed, info.file_size):
            data += piece
            if len(data) > info.file_size:
                raise BadMember(
                    f"{info.filename} decompresses past the {info.file_size} bytes its "
                    "directory declares: not read further"
                )
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        raise BadMember(f"{info.filename} does not decompress ({exc})") from None
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        raise BadMember(f"{info.filename} is truncated or fails its CRC")
    return bytes(data)


def _decompressed(method: int, data: bytes, size: int) -> Iterator[bytes]:
    """The decompressed bytes of one member, _STEP at a time, until the stream ends or its
    input runs out (what follows is the caller's to check)."""
    if method == zipfile.ZIP_STORED:
        yield data[: size + 1]
        return
    if method == zipfile.ZIP_DEFLATED:
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        while not inflate.eof:
            piece = inflate.decompress(data, _STEP)
            data = inflate.unconsumed_tail
            if not piece and not data:
                return
            yield piece
        return
    if method == zipfile.ZIP_BZIP2:
        stream: bz2.BZ2Decompressor | lzma.LZMADecompressor = bz2.BZ2Decompressor()
    elif method == zipfile.ZIP_LZMA:
        stream, data = _lzma(data, size)
    else:
        raise BadMember(f"compression method {method} is not supported")
    while not stream.eof:
        piece = stream.decompress(data, _STEP)
        data = b""
        if not piece and stream.needs_input:
            return
        yield piece


def _lzma(data: bytes, size: int) -> tuple[lzma.LZMADecompressor, bytes]:
    """A raw LZMA1 decoder for a zip member (APPNOTE 5.8.8: a version, the properties' length,
    the properties), its dictionary no larger than the member."""
    (length,) = struct.unpack("<H", data[2:4].ljust(2, b"\0"))
    properties, data = data[4 : 4 + length], data[4 + length :]
    if len(properties) < 5:
        raise BadMember("LZMA properties are missing")
    pb, rest = divmod(properties[0], 45)
    lp, lc = divmod(rest, 9)
    declared = int.from_bytes(properties[1:5], "little")
    dictionary = max(4096, min(declared, size))
    lzma1 = {"id": lzma.FILTER_LZMA1, "dict_size": dictionary, "lc": lc, "lp": lp, "pb": pb}
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1]), data
