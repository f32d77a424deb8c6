"""The upload size cap: the declared length, the bytes read, and how the limit is named."""

import pytest
from starlette.datastructures import Headers
from starlette.types import Message

from gitlab_pypi_proxy.errors import TooLarge
from gitlab_pypi_proxy.http.body_limit import check_declared, format_size, limited


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
