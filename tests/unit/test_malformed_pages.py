"""Upstream pages are untrusted input: a `url` source against the hostile index (loopback), with
documents of the wrong types, sizes, nesting and encodings. A bad entry is left out with one log
line per page, a bad document is a SourceUnavailable naming the source (a 502), and what is kept
renders as HTML and as JSON."""

import json
import logging
from collections.abc import Iterator

import httpx2
import pytest

from gitlab_pypi_proxy.config import SourceConfig
from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.http.serialize import HTML, JSON, render
from gitlab_pypi_proxy.model import ProjectPage
from gitlab_pypi_proxy.sources.simple_index import SimpleIndexSource
from gitlab_pypi_proxy.sources.upstream import Upstream
from tests.hostile_index import HTML as HTML_TYPE
from tests.hostile_index import JSON as JSON_TYPE
from tests.hostile_index import HostileIndex, Reply, hostile_index

SHA = "a" * 64
GOOD = {"filename": "demo-1.0.tar.gz", "url": "demo-1.0.tar.gz", "hashes": {"sha256": SHA}}


@pytest.fixture(scope="module")
def index() -> Iterator[HostileIndex]:
    with hostile_index() as (served, _):
        yield served


async def _page(index: HostileIndex, name: str = "demo") -> ProjectPage:
    config = SourceConfig("hostile", "url", f"{index.url}/simple/")
    async with httpx2.AsyncClient(timeout=5) as client:
        page = await SimpleIndexSource(config, Upstream(client)).project_page(name)
    assert page is not None
    return page


def _entry(n: int, **fields: object) -> dict[str, object]:
    return {
        "filename": f"demo-1.{n}.tar.gz",
        "url": f"demo-1.{n}.tar.gz",
        "hashes": {"sha256": f"{n:064x}"},
        **fields,
    }


def _rendered(page: ProjectPage) -> tuple[str, dict]:
    return render(page, HTML).body.decode(), json.loads(render(page, JSON).body)


async def test_entries_of_the_wrong_types_are_left_out_with_one_line(
    index: HostileIndex, caplog: pytest.LogCaptureFixture
) -> None:
    index.json_page(
        "demo",
        [
            GOOD,
            _entry(1, **{"requires-python": {"a": 1}}),
            "x",
            _entry(2, yanked={"why": "no"}),
            _entry(3, url=["not", "a", "url"]),
            {**_entry(4), "filename": "demo\r\n-1.4.tar.gz"},
            _entry(5, **{"requires-python": ">=3.8" + " " * 5000}),
            _entry(6, **{"requires-python": ">=3.8\r\nX-Injected: 1"}),
            _entry(7, size="12", provenance={"a": 1}, **{"upload-time": 12}),
            _entry(8, hashes=["sha256", SHA]),
            _entry(9, **{"core-metadata": {"sha256": [[["deep"]]]}}),
        ],
    )
    with caplog.at_level(logging.WARNING, "proxy.sources.simple_index"):
        page = await _page(index)
    kept = {f.filename: f for f in page.files}
    assert set(kept) == {"demo-1.0.tar.gz", "demo-1.7.tar.gz", "demo-1.9.tar.gz"}
    assert (kept["demo-1.7.tar.gz"].size, kept["demo-1.7.tar.gz"].provenance) == (None, None)
    assert kept["demo-1.9.tar.gz"].core_metadata_sha256 is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "source hostile: page demo: 7 malformed entries left out" in line
    assert "requires-python of demo-1.1.tar.gz is dict, not text" in line
    html, document = _rendered(page)
    assert html.count("<a href=") == 3
    assert [f["filename"] for f in document["files"]] == sorted(kept)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"files": "x"}', "its files are a JSON str, not a list"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
        (b'{"files": [{"size": NaN}]}', "NaN is not JSON"),
        (b'{"files": [], "name": "\xff\xfe"}', "JSON that is not UTF-8"),
        (b"[]", "a JSON list, not a project page object"),
        (b"<html>", "not JSON"),
    ],
    ids=["files-a-string", "deep", "nan", "not-utf8", "a-list", "html"],
)
async def test_a_document_that_is_no_project_page_is_the_sources_failure(
    index: HostileIndex, body: bytes, reason: str
) -> None:
    index.on("/simple/broken/", Reply(headers=[("content-type", JSON_TYPE)], body=body))
    with pytest.raises(SourceUnavailable) as failure:
        await _page(index, "broken")
    assert failure.value.status == 502
    assert str(failure.value).startswith("upstream hostile unavailable: unreadable page of broken")
    assert reason in str(failure.value)


async def test_html_with_invalid_utf8_deep_nesting_and_control_characters(
    index: HostileIndex,
) -> None:
    good = f'<a href="demo-1.0.tar.gz#sha256={SHA}">demo-1.0.tar.gz</a>'
    yanked = (
        f'<a href="demo-1.1.tar.gz#sha256={"1" * 64}" '
        'data-yanked="broken&#13;&#10;X-Injected: 1">x</a>'
    )
    injected = f'<a href="demo-1.2.tar.gz#sha256={"2" * 64}" data-requires-python="&#10;>=3">x</a>'
    named = f'<a href="demo%0d%0a-1.3.tar.gz#sha256={"3" * 64}">x</a>'
    body = (
        b"<html><body>"
        + b"<div>" * 200_000
        + b"\xff\xfe\xc3"
        + "".join([good, yanked, injected, named]).encode()
        + b"</body></html>"
    )
    index.on("/simple/demo/", Reply(headers=[("content-type", HTML_TYPE)], body=body))
    page = await _page(index)
    assert [f.filename for f in page.files] == ["demo-1.0.tar.gz", "demo-1.1.tar.gz"]
    assert page.files[1].yanked == "broken X-Injected: 1"
    html, document = _rendered(page)
    assert 'data-yanked="broken X-Injected: 1"' in html
    assert document["files"][1]["yanked"] == "broken X-Injected: 1"


async def test_project_status_and_yank_reasons_are_one_bounded_line(index: HostileIndex) -> None:
    reason = "moved\r\nX-Injected: 1\x00 é " + "x" * 5000
    index.json_page(
        "demo",
        [_entry(1, yanked=reason), _entry(2, yanked="")],
        meta={"api-version": "1.1", "project-status": {"status": "Deprecated\n", "reason": reason}},
    )
    page = await _page(index)
    assert (page.status, len(page.status_reason or "")) == ("deprecated", 300)
    assert (page.status_reason or "").startswith("moved X-Injected: 1 é xxx")
    assert page.files[0].yanked == page.status_reason
    assert page.files[1].yanked is False
