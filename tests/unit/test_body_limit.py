"""The upload size cap: the declared length, the bytes read, and how the limit is named; the cap on
a form's fields other than its file, counted as the bytes arrive."""

import pytest
from starlette.datastructures import Headers
from starlette.types import Message

from gitlab_pypi_proxy.errors import TooLarge
from gitlab_pypi_proxy.http.body_limit import (
    check_declared,
    form_fields_limited,
    format_size,
    limited,
)

BOUNDARY = "xYzZy"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def test_sizes_are_named_in_the_largest_whole_unit() -> None:
    assert format_size(3 * 2**30) == "3 GiB"
    assert format_size(2 * 2**20) == "2 MiB"
    assert format_size(1536) == "1536 bytes"


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    check_declared(Headers({"content-length": "1024"}), 1024)
    check_declared(Headers({}), 1024)  # chunked: only reading can tell
    with pytest.raises(TooLarge, match="larger than the limit of 1 KiB"):
        check_declared(Headers({"content-length": "1025"}), 1024)


async def test_reading_stops_at_the_first_chunk_past_the_limit() -> None:
    chunks = [b"a" * 600, b"b" * 424, b"c", b"d" * 600]
    asked: list[int] = []

    async def receive() -> Message:
        asked.append(1)
        return {"type": "http.request", "body": chunks[len(asked) - 1], "more_body": True}

    receive_within_limit = limited(receive, 1024)
    assert (await receive_within_limit())["body"] == b"a" * 600
    assert (await receive_within_limit())["body"] == b"b" * 424  # exactly at the limit
    with pytest.raises(TooLarge):
        await receive_within_limit()
    assert len(asked) == 3  # the refusing call read one message, no more


def _part(name: str, value: bytes, filename: str | None = None) -> bytes:
    file = f'; filename="{filename}"' if filename else ""
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{file}\r\n\r\n'
    return head.encode() + value + b"\r\n"


async def _read_all(chunks: list[bytes], content_type: str | None, limit: int) -> int:
    """How many messages the counting receive passed on before it stopped (or all of them)."""
    sent = iter(chunks)

    async def receive() -> Message:
        return {"type": "http.request", "body": next(sent), "more_body": True}

    counting = form_fields_limited(receive, content_type, limit)
    passed = 0
    for _ in chunks:
        await counting()
        passed += 1
    return passed


async def test_form_fields_other_than_files_are_refused_past_the_limit_in_all() -> None:
    fields = [_part(f"f{i}", b"v" * 300) for i in range(10)]  # ~3,800 bytes with their headers
    with pytest.raises(
        TooLarge,
        match="the upload's form fields other than the file are larger than the limit of 2 KiB",
    ):
        await _read_all(fields, FORM, 2048)
    assert await _read_all(fields[:4], FORM, 2048) == 4  # under the limit in all


async def test_a_file_part_is_not_counted_however_large() -> None:
    big = b"\0" * (64 * 1024)
    chunks = [
        _part("name", b"pkg"),
        _part("content", b"", filename="pkg-1.0.tar.gz")[:-2],
        *[big] * 16,  # 1 MiB of file, in chunks as they arrive
        b"\r\n" + _part("comment", b"after the file"),
        f"--{BOUNDARY}--\r\n".encode(),
    ]
    assert await _read_all(chunks, FORM, 1024) == len(chunks)


async def test_a_header_that_never_ends_counts_too() -> None:
    endless = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="'.encode()
    with pytest.raises(TooLarge):
        await _read_all([endless, b"n" * 4096], FORM, 2048)


async def test_what_is_no_multipart_form_passes_uncounted() -> None:
    assert await _read_all([b"x" * 4096], "application/octet-stream", 1024) == 1
    assert await _read_all([b"x" * 4096], None, 1024) == 1
    assert await _read_all([b"not a form at all" * 300], FORM, 1024) == 1  # the parser refuses
