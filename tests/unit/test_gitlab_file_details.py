"""PEP 700 for GitLab files: size and upload time from the Packages API, joined to the page."""

from datetime import UTC, datetime

import httpx
import pytest
import respx

from proxy.config import GitLabConfig, SourceConfig
from proxy.sources.gitlab import GitLabSource
from tests.unit.test_gitlab_source import API, client, page, source  # noqa: F401  (fixture)

SHA1, SHA2 = "1" * 64, "2" * 64


def _link(filename: str, sha: str) -> str:
    return f'<a href="https://g/files/{sha}/{filename}#sha256={sha}">{filename}</a>'


@respx.mock
async def test_sizes_and_times_from_every_page_exact_name_only(client) -> None:  # noqa: F811
    base = f"{API}/projects/acme%2Fplatform"
    respx.get(f"{base}/packages/pypi/simple/acme-utils").respond(
        200, text=page(_link("acme_utils-1.0.tar.gz", SHA1), _link("acme_utils-2.0.tar.gz", SHA2))
    )
    packages = {
        # package_name is a substring match: acme-utils-extra must be filtered out here
        "1": ([{"id": 5, "name": "Acme.Utils", "version": "1.0"}], "2"),
        "2": (
            [
                {"id": 6, "name": "acme_utils", "version": "2.0"},
                {"id": 7, "name": "acme-utils-extra", "version": "1.0"},
            ],
            "",
        ),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["package_name"] == "acme-utils"
        items, next_page = packages[request.url.params["page"]]
        return httpx.Response(200, json=items, headers={"X-Next-Page": next_page})

    respx.get(f"{base}/packages").mock(side_effect=answer)
    respx.get(f"{base}/packages/5/package_files").respond(
        200,
        json=[
            {
                "file_name": "acme_utils-1.0.tar.gz",
                "file_sha256": SHA1,
                "size": 111,
                "created_at": "2024-01-02T03:04:05.678Z",
            }
        ],
        headers={"X-Next-Page": ""},
    )
    respx.get(f"{base}/packages/6/package_files").respond(
        200,
        json=[
            {
                "file_name": "acme_utils-2.0.tar.gz",
                "file_sha256": SHA2,
                "size": 222,
                "created_at": "2024-06-01T00:00:00.000+02:00",
            }
        ],
        headers={"X-Next-Page": ""},
    )
    extra = respx.get(f"{base}/packages/7/package_files").respond(200, json=[])
    result = await source(client).project_page("acme-utils")
    assert result is not None
    details = {f.filename: (f.size, f.upload_time) for f in result.files}
    assert details == {
        "acme_utils-1.0.tar.gz": (111, datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)),
        "acme_utils-2.0.tar.gz": (222, datetime(2024, 5, 31, 22, 0, tzinfo=UTC)),
    }
    assert not extra.called


@pytest.mark.parametrize("status", [500, 403])
@respx.mock
async def test_packages_api_failure_still_serves_the_page(client, status: int) -> None:  # noqa: F811
    base = f"{API}/projects/acme%2Fplatform"
    respx.get(f"{base}/packages/pypi/simple/x").respond(200, text=page(_link("x-1.0.tar.gz", SHA1)))
    respx.get(f"{base}/packages").respond(status)
    result = await source(client).project_page("x")
    assert result is not None
    assert [(f.filename, f.size, f.upload_time) for f in result.files] == [
        ("x-1.0.tar.gz", None, None)
    ]


@respx.mock
async def test_configured_yanked_versions_are_marked(client) -> None:  # noqa: F811
    base = f"{API}/projects/acme%2Fplatform"
    respx.get(f"{base}/packages/pypi/simple/x").respond(
        200, text=page(_link("x-1.0.tar.gz", SHA1), _link("x-1.1.tar.gz", SHA2))
    )
    respx.get(f"{base}/packages").respond(200, json=[], headers={"X-Next-Page": ""})
    config = SourceConfig(
        "platform", "gitlab_project", "acme/platform", yanked={"x": frozenset({"1.1"})}
    )
    gitlab = GitLabConfig(url="http://gitlab.internal:8080", token="t", timeout=2)
    result = await GitLabSource(config, gitlab, client).project_page("x")
    assert result is not None
    assert {f.filename: f.yanked for f in result.files} == {
        "x-1.0.tar.gz": False,
        "x-1.1.tar.gz": True,
    }


@respx.mock
async def test_package_files_are_asked_again_only_for_a_version_with_a_new_file(client) -> None:  # noqa: F811
    base = f"{API}/projects/acme%2Fplatform"
    links = [_link("x-1.0.tar.gz", SHA1), _link("x-2.0.tar.gz", SHA2)]
    page_route = respx.get(f"{base}/packages/pypi/simple/x")
    page_route.respond(200, text=page(*links))
    respx.get(f"{base}/packages").respond(
        200,
        json=[{"id": 5, "name": "x", "version": "1.0"}, {"id": 6, "name": "x", "version": "2.0"}],
        headers={"X-Next-Page": ""},
    )

    def entry(filename: str, sha: str) -> dict:
        return {"file_name": filename, "file_sha256": sha, "size": 1, "created_at": "2024-01-01"}

    v1 = respx.get(f"{base}/packages/5/package_files").respond(
        200, json=[entry("x-1.0.tar.gz", SHA1)], headers={"X-Next-Page": ""}
    )
    v2_files = [entry("x-2.0.tar.gz", SHA2)]
    v2 = respx.get(f"{base}/packages/6/package_files").mock(
        side_effect=lambda request: httpx.Response(200, json=v2_files, headers={"X-Next-Page": ""})
    )
    gitlab = source(client)
    await gitlab.project_page("x")
    await gitlab.project_page("x")
    assert (v1.call_count, v2.call_count) == (1, 1)
    sha3 = "3" * 64
    page_route.respond(200, text=page(*links, _link("x-2.0-py3-none-any.whl", sha3)))
    v2_files.append(entry("x-2.0-py3-none-any.whl", sha3))
    result = await gitlab.project_page("x")
    assert result is not None and all(f.size == 1 for f in result.files)
    assert (v1.call_count, v2.call_count) == (1, 2)
