"""An error's one-line reason in the status line, where pip and uv print it: sanitised to one
line of printable ASCII, written by uvicorn's httptools server as the proxy runs it (this fails
when the table it wraps, uvicorn's internal, stops being used)."""

import http.client
import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gitlab_pypi_proxy.demo.server import serve
from gitlab_pypi_proxy.errors import NotFound
from gitlab_pypi_proxy.http.error_responses import MAX_PHRASE, PhrasedStatus, error_response
from gitlab_pypi_proxy.internals import reason_phrases
from gitlab_pypi_proxy.internals.server_protocol import CoalescingHttpTools

HELD = 'x-1.0-py3-none-any.whl is held by [policy] min_age = "1d": available from 2026-11-26'
PHRASE = HELD.replace('"', "'")  # uv would print double quotes escaped


def test_a_phrase_is_one_line_of_printable_ascii() -> None:
    status = PhrasedStatus(404, "caf\u00e9 \r\nx\ty \x00")
    assert status == 404 and isinstance(status, int)
    assert status.phrase == "caf x y"
    assert PhrasedStatus(404, "\u00e9").phrase == "Not Found"  # nothing left: the standard phrase
    assert len(PhrasedStatus(502, "x" * 1000).phrase) == MAX_PHRASE
    assert PhrasedStatus(404, HELD).phrase == PHRASE
    assert error_response(404, HELD).status_code.phrase == PHRASE  # type: ignore[attr-defined]


async def _held(request: Request) -> Response:
    raise NotFound(HELD)


async def _plain(request: Request) -> Response:
    return PlainTextResponse("gone", status_code=404)


def test_the_server_writes_the_reason_in_the_status_line() -> None:
    reason_phrases.install()
    app = Starlette(
        routes=[Route("/held", _held), Route("/plain", _plain)],
        exception_handlers={NotFound: lambda request, exc: error_response(404, str(exc))},
    )
    with serve(app, http=CoalescingHttpTools) as server:  # type: ignore[arg-type]
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/held")
        answer = connection.getresponse()
        assert (answer.status, answer.reason) == (404, PHRASE)
        assert answer.read().decode() == HELD + "\n"
        connection.request("GET", "/plain")  # the same connection: the framing is intact
        plain = connection.getresponse()
        assert (plain.status, plain.reason, plain.read()) == (404, "Not Found", b"gone")
        connection.close()


def test_a_uvicorn_without_the_table_keeps_its_phrases_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from uvicorn.protocols.http import httptools_impl

    monkeypatch.delattr(httptools_impl, "STATUS_LINE")
    with caplog.at_level(logging.WARNING, "proxy.http"):
        reason_phrases.install()
    assert "no table of status lines" in caplog.text
