"""Range headers on cached files (RFC 9110 14.1.2, 14.2): an invalid one is ignored (200, the
whole file), a valid one that cannot be satisfied is 416, numbers of any length are numbers."""

import io

import pytest
from starlette.datastructures import Headers

from gitlab_pypi_proxy.http.file_responses import cached_response, parse_range
from gitlab_pypi_proxy.storage.cached_file import CachedFile

SIZE = 1000
HUGE = "9" * 5000  # past Python's int() limit of 4,300 digits


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=-+2",
        "bytes=\u0661-2",  # ARABIC-INDIC DIGIT ONE
        "bytes=1-\u0662",
        "bytes=\uff11-",  # FULLWIDTH DIGIT ONE
        "bytes=\xb9-\xb2",  # SUPERSCRIPT ONE, TWO: as a latin-1 header can hold them
        "bytes=1_0-20",
        "bytes=0x1-2",
        "bytes= 1 - 2",
        "bytes=-",
        "bytes=",
        "bytes",
        "bytes 0-1",
        "items=0-1",
        "bytes=0-1,5-6",
        "bytes=5-3",  # last-pos before first-pos: invalid, not unsatisfiable
        f"bytes={HUGE}-1",
        f"bytes={HUGE}9-{HUGE}",
        f"bytes={HUGE}-",  # too long to name a byte of any file: ignored, not 416
        f"bytes={HUGE}-{HUGE}9",
        f"bytes=0-{HUGE}",
        f"bytes=-{HUGE}",
        "bytes=0-1234567890123456789",  # 19 digits
    ],
)
def test_an_invalid_range_is_ignored(header: str) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=10-19", (10, 19)),
        ("BYTES=10-", (10, SIZE - 1)),
        ("bytes=990-5000", (990, SIZE - 1)),
        ("bytes=-10", (SIZE - 10, SIZE - 1)),
        ("bytes=-5000", (0, SIZE - 1)),
        ("bytes=007-008", (7, 8)),
        ("bytes=0-123456789012345678", (0, SIZE - 1)),  # a last-pos past the end is the end
        ("bytes=-123456789012345678", (0, SIZE - 1)),  # a suffix longer than the file: all of it
        (f"bytes=5-{'0' * 5000}7", (5, 7)),  # leading zeros of any length
    ],
)
def test_a_valid_range(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", SIZE),
        ("bytes=1000-2000", SIZE),
        ("bytes=123456789012345678-", SIZE),  # a first-pos past the end
        ("bytes=-0", SIZE),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_a_valid_range_that_cannot_be_satisfied(header: str, size: int) -> None:
    with pytest.raises(ValueError):
        parse_range(header, size)


def _served(range_header: str) -> tuple[int, dict[str, str]]:
    cached = CachedFile("a" * 64, SIZE, 0.0, handle=io.BytesIO(b"x" * SIZE))  # type: ignore[arg-type]
    # a header as the server hands it over: bytes (here UTF-8 where latin-1 cannot hold the
    # text) decoded as latin-1
    try:
        raw = range_header.encode("latin-1")
    except UnicodeEncodeError:
        raw = range_header.encode()
    headers = Headers(raw=[(b"range", raw)])
    body = cached_response(cached, "a" * 64, headers, "GET")
    return body.status, body.headers


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=\u0661-2",
        "bytes=\xb9-",
        f"bytes={HUGE}-1",
        f"bytes={HUGE}-",
    ],
)
def test_a_cached_file_with_an_invalid_range_is_served_whole(header: str) -> None:
    status, headers = _served(header)
    assert status == 200
    assert headers["content-length"] == str(SIZE) and "content-range" not in headers


def test_a_cached_file_with_a_first_position_past_the_end_is_416() -> None:
    status, headers = _served("bytes=1000-")
    assert status == 416 and headers["content-range"] == f"bytes */{SIZE}"
