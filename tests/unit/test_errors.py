"""Every failure a client can see: its status, its one-line reason, its headers, rendered by the
one handler."""

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gitlab_pypi_proxy.errors import (
    FailClosed,
    NotFound,
    ProxyError,
    RateLimited,
    SourceUnavailable,
    TooManyFailures,
    Unauthorized,
    Unavailable,
    UploadRefused,
)
from gitlab_pypi_proxy.http import error_responses
from gitlab_pypi_proxy.http.error_responses import error_response
from tests.unit.asgi import asgi_client


def test_an_error_answer_is_never_a_success() -> None:
    """The upload route once sent its 201 through the error helper."""
    with pytest.raises(ValueError, match="not an error status"):
        error_response(201, "uploaded x-1.0.tar.gz to platform")
    with pytest.raises(ValueError):
        UploadRefused(201, "GitLab answered 201")


@pytest.mark.parametrize(
    ("failures", "status", "retry_after"),
    [
        ([SourceUnavailable("a", "ConnectError")], 502, None),
        ([SourceUnavailable("a", "timed out", timeout=True)], 504, None),
        ([RateLimited("a", "HTTP 429", 12.2), RateLimited("b", "HTTP 429", 30)], 503, "30"),
        ([RateLimited("a", "HTTP 429", 12), SourceUnavailable("b", "ConnectError")], 502, None),
    ],
)
def test_unavailable_says_502_504_or_503_with_retry_after(
    failures: list[SourceUnavailable], status: int, retry_after: str | None
) -> None:
    exc = Unavailable(failures)
    assert exc.status == status
    assert exc.headers().get("retry-after") == retry_after
    assert str(exc) == "; ".join(str(f) for f in failures)


def test_fail_closed_is_503_naming_the_sources() -> None:
    exc = FailClosed("acme-utils", [SourceUnavailable("platform", "ConnectError")])
    assert exc.status == 503 and "retry-after" not in exc.headers()
    assert str(exc).startswith("source platform cannot be reached and may own acme-utils")


async def test_the_handler_renders_one_plain_line_with_the_errors_headers() -> None:
    raised: list[ProxyError] = [
        NotFound("no source has a project named x"),
        Unauthorized("this index needs a valid user name and password", realm="corp"),
        TooManyFailures(7),
        ProxyError("upstream https://u:glpat-secret@gitlab.example.com broke\nsecond line"),
    ]

    async def route(request: Request) -> None:
        raise raised[int(request.path_params["n"])]

    app = Starlette(
        routes=[Route("/{n}", route)], exception_handlers={ProxyError: error_responses.handle}
    )
    async with asgi_client(app, "127.0.0.1") as client:
        answers = [await client.get(f"/{n}") for n in range(len(raised))]
    assert [a.status_code for a in answers] == [404, 401, 429, 500]
    assert answers[0].text == "no source has a project named x\n"
    assert answers[0].headers["content-type"].startswith("text/plain")
    assert answers[1].headers["www-authenticate"] == 'Basic realm="corp"'
    assert answers[2].headers["retry-after"] == "7"
    assert answers[3].text == "upstream https://***@gitlab.example.com broke second line\n"
