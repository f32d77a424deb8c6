"""The one shape every error answer takes: a one-line plain-text reason, never a traceback or a
secret."""

from starlette.responses import PlainTextResponse, Response

from proxy.redact import mask_userinfo


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(mask_userinfo(message) + "\n", status_code=status, headers=headers)
