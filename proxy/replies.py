"""The one shape every error answer takes: a one-line plain-text reason, never a traceback or a
secret."""

from starlette.responses import PlainTextResponse, Response


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)
