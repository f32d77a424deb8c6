"""The GitLab source's upload call and access probe, against GitLab's answers mocked with respx."""

import email
import io

import httpx
import httpx2
import pytest
import respx

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.sources.gitlab_group import GitLabGroup
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.upstream import Upstream

API = "http://gitlab.internal:8080/api/v4"
UPLOAD = f"{API}/projects/11/packages/pypi"


def source(client: httpx2.AsyncClient, kind: str = "gitlab_project", target: str = "11"):
    gitlab = GitLabConfig(url="http://gitlab.internal:8080", token="glpat-reader", timeout=2)
    kinds = {"gitlab_project": GitLabProject, "gitlab_group": GitLabGroup}
    return kinds[kind](
        SourceConfig(name="platform", kind=kind, target=target), gitlab, Upstream(client)
    )


def parts(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """name → (file name, bytes) of a multipart body, read with the standard library."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + request.content)
    return {
        part.get_param("name", header="content-disposition"): (
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in message.get_payload()
    }


@respx.mock
async def test_upload_posts_only_the_fields_gitlab_reads_with_the_file_streamed(client) -> None:
    route = respx.post(UPLOAD).respond(201, json={"message": "201 Created"})
    data = bytes(range(256)) * 5000  # > one read chunk
    fields = {
        "name": "acme-tool",
        "version": "1.0",
        ":action": "file_upload",
        "classifiers": "x",
        "sha256_digest": "ab" * 32,
        "md5_digest": "cd" * 16,
        "description": "line one\r\nline two",
    }
    answer = await source(client).upload(
        fields, "acme_tool-1.0.tar.gz", io.BytesIO(data), len(data), httpx2.BasicAuth("u", "tok")
    )
    assert answer.status == 201 and answer.message == "201 Created"
    request = route.calls.last.request
    assert int(request.headers["content-length"]) == len(request.content)
    received = parts(request)
    assert received["content"] == ("acme_tool-1.0.tar.gz", data)
    assert set(received) == {
        "name",
        "version",
        "sha256_digest",
        "md5_digest",
        "description",
        "content",
    }
    assert received["description"][1] == b"line one\r\nline two"


@respx.mock
async def test_upload_returns_gitlab_refusals_and_raises_on_5xx(client) -> None:
    message = "400 Bad request - Validation failed: File name has already been taken"
    respx.post(UPLOAD).mock(
        side_effect=[httpx.Response(400, json={"message": message}), httpx.Response(503)]
    )
    auth = httpx2.BasicAuth("u", "tok")
    answer = await source(client).upload({"name": "x"}, "x-1.tar.gz", io.BytesIO(b"x"), 1, auth)
    assert (answer.status, answer.message) == (400, message)
    with pytest.raises(SourceUnavailable, match="platform unavailable: HTTP 503"):
        await source(client).upload({"name": "x"}, "x-1.tar.gz", io.BytesIO(b"x"), 1, auth)


@respx.mock
async def test_project_probe_is_its_pypi_root_index(client) -> None:
    route = respx.get(f"{UPLOAD}/simple").mock(
        side_effect=[httpx.Response(200, text="<html></html>"), httpx.Response(404)]
    )
    auth = httpx2.BasicAuth("gitlab-ci-token", "job")
    assert await source(client).readable_with(auth)
    assert not await source(client).readable_with(auth)
    assert route.calls.last.request.headers["authorization"] == auth._auth_header


@respx.mock
async def test_group_probe_needs_every_package_the_proxy_sees(client) -> None:
    def packages(request: httpx.Request) -> httpx.Response:
        mine = request.headers["authorization"] == httpx2.BasicAuth("u", "theirs")._auth_header
        total = "3" if mine else "5"
        return httpx.Response(200, json=[], headers={"x-total": total})

    respx.get(f"{API}/groups/acme/packages").mock(side_effect=packages)
    group = source(client, "gitlab_group", "acme")
    assert not await group.readable_with(httpx2.BasicAuth("u", "theirs"))
    assert await group.readable_with(httpx2.BasicAuth("gitlab-pypi-proxy", "glpat-reader"))
