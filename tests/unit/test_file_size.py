"""The size of an uncached file for a HEAD and whether its source serves ranges: as listed, else
the upstream's HEAD, else (object storage refuses a HEAD on a URL signed for GET) a one-byte
ranged GET; never a download."""

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest
import respx

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.errors import FileNotFoundUpstream, Unavailable
from gitlab_pypi_proxy.index.files import FileFinder
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.upstream import Head, Upstream
from tests.unit.indexes import composed

API = "http://gitlab.internal/api/v4"
SHA = "b" * 64
FILE_URL = f"{API}/projects/11/packages/pypi/files/{SHA}/acme-1.0.tar.gz"
STORAGE = "http://storage.internal/bucket/acme-1.0.tar.gz?X-Amz-Signature=abc"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[FileFinder, GitLabProject]]:
    async with httpx2.AsyncClient(timeout=2) as client:
        gitlab = GitLabConfig(url="http://gitlab.internal", token="glpat-t0ken", timeout=2)
        source = GitLabProject(
            SourceConfig("platform", "gitlab_project", "11"), gitlab, Upstream(client)
        )
        yield composed(tmp_path, [source]).files, source


@respx.mock
async def test_the_listed_size_needs_no_request_once_the_source_said_it_serves_ranges(
    world,
) -> None:
    index, source = world
    head = respx.head(FILE_URL).respond(
        200, headers={"content-length": "4321", "accept-ranges": "bytes"}
    )
    listed = replace(source.file_for(SHA, "acme-1.0.tar.gz"), size=4321)
    assert await index.head([listed]) == Head(4321, ranges=True)
    other = replace(source.file_for("c" * 64, "acme-1.1.tar.gz"), size=1234)
    assert await index.head([other]) == Head(1234, ranges=True)
    assert head.call_count == 1  # what a source says of ranges is asked once


@respx.mock
async def test_gitlabs_head_gives_the_size(world) -> None:
    index, source = world
    head = respx.head(FILE_URL).respond(200, headers={"content-length": "12345"})
    get = respx.get(FILE_URL).respond(200, content=b"x" * 12345)
    assert await index.head([source.file_for(SHA, "acme-1.0.tar.gz")]) == Head(12345)
    assert head.called and not get.called


@respx.mock
async def test_object_storage_refusing_a_head_falls_back_to_one_ranged_byte(world) -> None:
    index, source = world
    respx.head(FILE_URL).respond(302, headers={"location": STORAGE})
    respx.head(STORAGE).respond(403, text="<Error>SignatureDoesNotMatch</Error>")
    respx.get(FILE_URL).respond(302, headers={"location": STORAGE})
    ranged = respx.get(STORAGE).respond(
        206, headers={"content-range": "bytes 0-0/98765"}, content=b"x"
    )
    assert await index.head([source.file_for(SHA, "acme-1.0.tar.gz")]) == Head(98765, ranges=True)
    request = ranged.calls.last.request
    assert request.headers["range"] == "bytes=0-0"
    assert "authorization" not in request.headers  # GitLab's token stays on GitLab's origin


@respx.mock
async def test_a_file_no_candidate_has_and_an_upstream_that_is_down(world) -> None:
    index, source = world
    respx.head(FILE_URL).respond(404)
    respx.get(FILE_URL).respond(404)
    with pytest.raises(FileNotFoundUpstream):
        await index.head([source.file_for(SHA, "acme-1.0.tar.gz")])
    respx.head(FILE_URL).respond(503)
    with pytest.raises(Unavailable, match="upstream platform unavailable: HTTP 503"):
        await index.head([source.file_for(SHA, "acme-1.0.tar.gz")])
