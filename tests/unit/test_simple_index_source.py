"""A `url` source (any PEP 503/691 index) against mocked answers: JSON and HTML, what it passes
through, redirects, and credentials that never leave the index's origin."""

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urljoin

import httpx2
import pytest
import respx

from gitlab_pypi_proxy.config import SourceConfig
from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.model import DistFile
from gitlab_pypi_proxy.sources.simple_index import ACCEPT, SimpleIndexSource, parse_json_page
from gitlab_pypi_proxy.sources.upstream import Upstream

INDEX = "https://index.example.org/simple/"
FILES = "https://files.example.net/packages"
SHA, META = "a" * 64, "b" * 64
AUTH = "Basic " + base64.b64encode(b"reader:s3cret").decode()
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def source(client: httpx2.AsyncClient) -> SimpleIndexSource:
    config = SourceConfig(
        "public",
        "url",
        INDEX,
        username="reader",
        password="s3cret",
        file_hosts=("files.example.net",),
    )
    return SimpleIndexSource(config, Upstream(client))


@respx.mock
async def test_json_page_passes_through_what_the_index_says(client) -> None:
    document = {
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "files": [
            {
                "filename": "demo-1.0-py3-none-any.whl",
                "url": f"{FILES}/demo-1.0-py3-none-any.whl",
                "hashes": {"sha256": SHA},
                "requires-python": ">=3.9",
                "yanked": "broken",
                "core-metadata": {"sha256": META},
                "size": 1234,
                "upload-time": "2024-02-03T04:05:06.000000Z",
            },
            {"filename": "demo-0.9.tar.gz", "url": "../../p/demo-0.9.tar.gz", "hashes": {}},
        ],
    }
    route = respx.get(f"{INDEX}demo/").respond(
        200, content=json.dumps(document).encode(), headers={"content-type": JSON_TYPE}
    )
    page = await source(client).project_page("demo")
    request = route.calls.last.request
    assert request.headers["accept"] == ACCEPT
    assert request.headers["authorization"] == AUTH
    assert page is not None
    (file,) = page.files  # the file without a sha256 cannot be verified: left out
    assert file.url == f"{FILES}/demo-1.0-py3-none-any.whl"
    assert (file.requires_python, file.yanked) == (">=3.9", "broken")
    assert (file.core_metadata_sha256, file.size) == (META, 1234)
    assert file.upload_time == datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)


@respx.mock
async def test_html_page_relative_links_and_missing_name(client) -> None:
    respx.get(f"{INDEX}demo/").respond(
        200,
        text=f'<a href="/packages/demo-1.0.tar.gz#sha256={SHA}" data-yanked="">demo-1.0.tar.gz</a>',
        headers={"content-type": "text/html"},
    )
    respx.get(f"{INDEX}nothing/").respond(404)
    index = source(client)
    page = await index.project_page("demo")
    assert page is not None
    assert page.files[0].url == "https://index.example.org/packages/demo-1.0.tar.gz"
    assert page.files[0].yanked is True
    assert await index.project_page("nothing") is None


@respx.mock
async def test_redirect_followed_once_on_its_own_origin_only(client) -> None:
    respx.get(f"{INDEX}demo/").respond(301, headers={"location": "/simple/demo-x/"})
    target = respx.get(f"{INDEX}demo-x/").respond(200, text="<html></html>")
    respx.get(f"{INDEX}elsewhere/").respond(
        302, headers={"location": "https://evil.example.com/simple/elsewhere/"}
    )
    evil = respx.get("https://evil.example.com/simple/elsewhere/").respond(200, text="")
    index = source(client)
    assert await index.project_page("demo") is not None
    assert target.calls.last.request.headers["authorization"] == AUTH
    assert await index.project_page("elsewhere") is None
    assert not evil.called


@respx.mock
async def test_files_on_another_origin_get_no_credentials(client) -> None:
    elsewhere, own = f"{FILES}/demo-1.0.tar.gz", "https://index.example.org/p/demo-1.0.tar.gz"
    other = respx.get(elsewhere).respond(200, content=b"bytes")
    same = respx.get(own).respond(200, content=b"x")
    index = source(client)
    for url in (elsewhere, own):
        async with index.open_file(DistFile("demo-1.0.tar.gz", SHA, "public", url)) as stream:
            async for _ in stream.chunks:
                pass
    assert "authorization" not in other.calls.last.request.headers
    assert same.calls.last.request.headers["authorization"] == AUTH


@respx.mock
async def test_credentials_refused_is_unavailable_without_the_secret(client) -> None:
    respx.get(f"{INDEX}demo/").respond(401)
    with pytest.raises(SourceUnavailable) as caught:
        await source(client).project_page("demo")
    assert "401" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@respx.mock
async def test_upstream_metadata_sidecar_is_checked_against_its_digest(client) -> None:
    body = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n"
    url = f"{FILES}/demo-1.0-py3-none-any.whl"
    respx.get(url + ".metadata").respond(200, content=body)
    good = DistFile("demo-1.0-py3-none-any.whl", SHA, "public", url)
    good = replace(good, core_metadata_sha256=hashlib.sha256(body).hexdigest())
    assert await source(client).core_metadata(good) == body
    bad = replace(good, core_metadata_sha256=META)
    with pytest.raises(SourceUnavailable):
        await source(client).core_metadata(bad)


@respx.mock
async def test_root_index_json_names_are_normalized(client) -> None:
    document = {"meta": {"api-version": "1.0"}, "projects": [{"name": "Foo.Bar"}, {"name": "b"}]}
    respx.get(INDEX).respond(
        200, content=json.dumps(document).encode(), headers={"content-type": JSON_TYPE}
    )
    assert await source(client).project_names() == frozenset({"foo-bar", "b"})


@pytest.mark.parametrize(
    "url",
    [
        "https://files.example/packages/ab/cd/lib-1.0-py3-none-any.whl",
        "http://files.example/p/lib-1.0-py3-none-any.whl?token=x",
        "/packages/lib-1.0-py3-none-any.whl",
        "../../packages/lib-1.0-py3-none-any.whl",
        "lib-1.0-py3-none-any.whl",
        "//files.example/lib-1.0-py3-none-any.whl",
    ],
)
def test_a_json_page_s_file_urls_are_resolved_as_urljoin_resolves_them(url: str) -> None:
    page_url = "https://pypi.example/simple/lib/"
    body = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": "lib",
            "files": [
                {
                    "filename": "lib-1.0-py3-none-any.whl",
                    "url": url + "#sha256=" + "a" * 64,
                    "hashes": {"sha256": "a" * 64},
                    "provenance": url + ".provenance",
                }
            ],
        }
    ).encode()
    [(link, _, _)], _, _ = parse_json_page(body, page_url)
    assert link.url == urljoin(page_url, url)
    assert link.provenance == urljoin(page_url, url + ".provenance")
