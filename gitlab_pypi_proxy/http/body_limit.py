"""A cap on the size of a request body, enforced while it is read.

A declared Content-Length over the cap is refused before a byte is read; a body without one (or
that runs past it) is cut at the first chunk past the cap, so nothing larger is ever spooled.
"""

from starlette.datastructures import Headers
from starlette.types import Message, Receive

from gitlab_pypi_proxy.errors import TooLarge


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
