"""Caps on a request body, enforced while it is read: its size, and the part of a form that is
held in memory.

A declared Content-Length over the cap is refused before a byte is read; a body without one (or
that runs past it) is cut at the first chunk past the cap, so nothing larger is ever spooled.

A form's file is spooled to disk, but each of its other fields is kept in memory whole: 190
fields of 8 MiB made one upload hold 1.6 GiB. The fields other than files (their part headers and
values) are counted in all, on the bytes as they arrive and before the form parser stores them,
and refused past FORM_FIELDS_LIMIT: metadata and a long description need far less (GitLab keeps
4,000 characters of a description).
"""

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.types import Message, Receive

from gitlab_pypi_proxy.errors import TooLarge

FORM_FIELDS_LIMIT = 4 * 2**20  # bytes of a form's fields other than files, in all


def format_size(size: int) -> str:
    """3221225472 → '3 GiB'; a size that is no whole number of a unit stays in bytes."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"the upload is larger than the limit of {format_size(limit)}")


def check_declared(headers: Headers, limit: int) -> None:
    """Raise TooLarge when the Content-Length header announces more than `limit` bytes."""
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)


def limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising TooLarge as soon as the body read so far exceeds `limit` bytes."""
    seen = 0

    async def receive_within_limit() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return receive_within_limit


class _FieldBytes:
    """python-multipart callbacks counting the bytes of part headers and of the values of parts
    that are no file (a part is a file when its Content-Disposition has a filename)."""

    def __init__(self) -> None:
        self.count = 0
        self.name, self.value, self.disposition = b"", b"", b""
        self.in_file = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
        }

    def on_part_begin(self) -> None:
        self.disposition, self.in_file = b"", False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.count += end - start
        self.name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.count += end - start
        self.value += data[start:end]

    def on_header_end(self) -> None:
        if self.name.lower() == b"content-disposition":
            self.disposition = self.value
        self.name, self.value = b"", b""

    def on_headers_finished(self) -> None:
        self.in_file = b"filename" in parse_options_header(self.disposition)[1]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file:
            self.count += end - start


def form_fields_limited(receive: Receive, content_type: str | None, limit: int) -> Receive:
    """`receive`, raising TooLarge as soon as the multipart form it carries has more than
    `limit` bytes of fields other than files. A body that is no multipart form, or that the
    parser cannot read, passes uncounted: the form parser reading it refuses it."""
    boundary = parse_options_header(content_type or "")[1].get(b"boundary")
    if not boundary:
        return receive
    fields = _FieldBytes()
    parser: MultipartParser | None = MultipartParser(boundary, fields.callbacks())  # type: ignore[arg-type]

    async def receive_counting_fields() -> Message:
        nonlocal parser
        message = await receive()
        if parser is not None and message["type"] == "http.request":
            try:
                parser.write(message.get("body", b""))
            except FormParserError:
                parser = None
            if fields.count > limit:
                raise TooLarge(
                    f"the upload's form fields other than the file are larger than the limit "
                    f"of {format_size(limit)}"
                )
        return message

    return receive_counting_fields
