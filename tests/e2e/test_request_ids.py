"""Request ids end to end: a client's X-Request-ID comes back on the response and is on every log
line of its request (the access line, the upload's own line), in the text and the JSON format;
a bad one is replaced by a new id."""

import json
from collections.abc import Iterator

import httpx2
import pytest

from gitlab_pypi_proxy.request_id import accepted
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until
from tests.worlds import UPLOADER_CONFIG, app_taking_uploads, upload_wheel

TOKEN = "glpat-request-ids-reader"


@pytest.fixture(scope="module", params=["text", "json"])
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    double = app_taking_uploads(TOKEN)
    directory = tmp_path_factory.mktemp(f"request-ids-{request.param}")
    with serve(double.app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(directory, server.url, sources, token=TOKEN, extra=UPLOADER_CONFIG)
        process = start_proxy(config, "--log-format", request.param)
        try:
            yield process
        finally:
            process.stop()


def _json_format(proxy: ProxyProcess) -> bool:
    return proxy.args[proxy.args.index("--log-format") + 1] == "json"


def _lines_of(proxy: ProxyProcess, request_id: str) -> list[tuple[str, str]]:
    """(logger, message) of every log line that names `request_id` as its request."""
    found = []
    for text in proxy.log().splitlines():
        if _json_format(proxy):
            if not text.startswith("{"):
                continue
            line = json.loads(text)
            if line["request_id"] == request_id:
                found.append((line["logger"], line["message"]))
        elif f" [{request_id}]: " in text:
            head, message = text.split(f" [{request_id}]: ", 1)
            found.append((head.rsplit(" ", 1)[1], message))
    return found


def _loggers(proxy: ProxyProcess, request_id: str, *wanted: str) -> list[tuple[str, str]]:
    def seen() -> list[tuple[str, str]] | None:
        lines = _lines_of(proxy, request_id)
        return lines if {logger for logger, _ in lines} >= set(wanted) else None

    return wait_until(seen, f"log lines of {', '.join(wanted)} for request {request_id}")


def test_a_clients_id_comes_back_and_is_on_the_access_line(proxy: ProxyProcess) -> None:
    request_id = "page-3f9c2e71-d0b1-4b8e-9a55-1c2d3e4f5a6b"
    page = httpx2.get(f"{proxy.url}/simple/app-main/", headers={"X-Request-ID": request_id})
    assert page.status_code == 200
    assert page.headers.get_list("x-request-id") == [request_id]
    lines = _loggers(proxy, request_id, "proxy.access")
    assert any('"GET /simple/app-main/" 200' in message for _, message in lines)


def test_every_line_of_an_upload_carries_its_id(proxy: ProxyProcess) -> None:
    request_id = "upload/ci-job:4711"
    filename, answer = upload_wheel(
        proxy.url, "traced-pkg", "1.0", headers={"X-Request-ID": request_id}
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["x-request-id"] == request_id
    lines = dict(_loggers(proxy, request_id, "proxy.access", "proxy.upload"))
    assert lines["proxy.upload"].startswith(f"uploaded {filename} (")
    assert '"POST /upload/" 201' in lines["proxy.access"]


def test_a_bad_id_is_replaced_and_never_logged(proxy: ProxyProcess) -> None:
    bad = "not an id"  # spaces could forge fields of a text log line
    page = httpx2.get(f"{proxy.url}/simple/app-dep/", headers={"X-Request-ID": bad})
    assert page.status_code == 200
    made = page.headers["x-request-id"]
    assert made != bad and accepted(made.encode()) == made
    lines = _loggers(proxy, made, "proxy.access")
    assert any('"GET /simple/app-dep/" 200' in message for _, message in lines)
    assert bad not in proxy.log()
