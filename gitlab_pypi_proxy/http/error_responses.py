"""How a failure is answered: every ProxyError (gitlab_pypi_proxy.errors) becomes one shape of
response, its status, its headers (Retry-After, WWW-Authenticate) and its reason as one line of
plain text, credentials in URLs masked, never a traceback.

The reason is also the status line's reason phrase (`PhrasedStatus`, which
gitlab_pypi_proxy.internals.reason_phrases has the server write): pip and uv print a failed
download's status line, never its body. `handle` is the app's exception handler; the access
middleware, which runs outside Starlette's handlers, answers with the same `response`.
"""

import http
import re
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gitlab_pypi_proxy.errors import ProxyError
from gitlab_pypi_proxy.redact import mask_userinfo

_NOT_PHRASE = re.compile(r"[^\x20-\x7e]+")  # RFC 9110 allows HTAB, SP, VCHAR; ASCII to be safe
MAX_PHRASE = 300


class PhrasedStatus(int):
    """An HTTP status with its own reason phrase (one line of printable ASCII), which the
    server writes in the status line (`gitlab_pypi_proxy.internals.reason_phrases`)."""

    phrase: str

    def __new__(cls, code: int, phrase: str) -> "PhrasedStatus":
        status = super().__new__(cls, code)
        # uv prints double quotes escaped; single quotes read the same and print as they are
        text = " ".join(_NOT_PHRASE.sub(" ", phrase).replace('"', "'").split())
        status.phrase = text[:MAX_PHRASE] or http.HTTPStatus(code).phrase
        return status


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    """The one shape of an error answer: the reason as one line of plain text, masked, and as
    the status line's reason phrase (what pip and uv print of a failed download)."""
    if not 400 <= status < 600:
        raise ValueError(f"HTTP {status} is not an error status")
    line = mask_userinfo(" ".join(reason.splitlines()))
    return PlainTextResponse(
        line + "\n", status_code=PhrasedStatus(status, line), headers=dict(headers or {})
    )


def response(exc: ProxyError) -> Response:
    """The answer to `exc`."""
    return error_response(exc.status, str(exc), exc.headers())


async def handle(request: Request, exc: Exception) -> Response:
    """The Starlette exception handler for every ProxyError a route raises."""
    assert isinstance(exc, ProxyError)
    return response(exc)
