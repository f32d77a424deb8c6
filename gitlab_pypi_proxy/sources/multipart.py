"""A multipart/form-data request body streamed from a file on disk, with its exact length.

httpx2 reads a synchronous file object on the event loop; this reads each chunk in a thread.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 256 * 1024


@dataclass
class MultipartBody:
    content_type: str
    length: int
    chunks: AsyncIterator[bytes]


def _quote(value: str) -> str:
    # RFC 7578: a name or file name in the header is a quoted string; escape what would end it.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def multipart_body(
    fields: Mapping[str, str], file_field: str, filename: str, file: BinaryIO, size: int
) -> MultipartBody:
    boundary = secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(k)}"\r\n\r\n'.encode()
        + v.encode()
        + b"\r\n"
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(file_field)}"; '
        f'filename="{_quote(filename)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        await asyncio.to_thread(file.seek, 0)
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            yield chunk
        yield tail

    return MultipartBody(
        f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), chunks()
    )
