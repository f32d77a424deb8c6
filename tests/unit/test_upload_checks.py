"""The upload form checks, and the bound on the wait for GitLab's answer to an upload."""

import io
from pathlib import Path

import httpx
import httpx2
import pytest
import respx
from starlette.datastructures import FormData

from gitlab_pypi_proxy.config import ConfigError, GitLabConfig, SourceConfig, load
from gitlab_pypi_proxy.http.upload import form_problem
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.upstream import Upstream

WHEEL = "acme_tool-1.0.0-py3-none-any.whl"


@pytest.mark.parametrize(
    ("fields", "filename"),
    [
        ({"name": "acme-tool", "version": "1.0.0", ":action": "file_upload"}, WHEEL),
        ({"name": "Acme.Tool", "version": "1.0"}, WHEEL),  # PEP 503 and PEP 440 equal
        ({"name": "acme_tool", "version": "1.0.0"}, "acme_tool-1.0.0.tar.gz"),
        ({"name": "acme-tool", "version": "1.0.0"}, "acme-tool-1.0.0.zip"),
        ({"name": "acme-tool", "version": "2.0rc1"}, "acme_tool-2.0rc1.tar.gz"),
    ],
)
def test_forms_that_match_their_file(fields: dict[str, str], filename: str) -> None:
    assert form_problem(FormData(list(fields.items())), filename) is None


@pytest.mark.parametrize(
    ("fields", "filename", "reason"),
    [
        (
            {"name": "other", "version": "1.0.0"},
            WHEEL,
            f"{WHEEL} is a file of acme-tool, not of other",
        ),
        ({"name": "acme-tool", "version": "1.0.1"}, WHEEL, f"{WHEEL} is version 1.0.0, not 1.0.1"),
        ({"name": "acme-tool", "version": "latest"}, WHEEL, "not a valid version: 'latest'"),
        (
            {"name": "acme-tool", "version": "1.0.0"},
            "acme_tool-1.0.0.egg",
            "acme_tool-1.0.0.egg is not a wheel (.whl) or sdist (.tar.gz, .zip) file name",
        ),
        (
            {"name": "acme-tool", "version": "1.0.0"},
            "acme_tool-1.0.0.tar.bz2",
            "acme_tool-1.0.0.tar.bz2 is not a wheel (.whl) or sdist (.tar.gz, .zip) file name",
        ),
        (
            {"name": "acme-tool", "version": "1.0.0"},
            "acme_tool.whl",
            "acme_tool.whl is not a wheel (.whl) or sdist (.tar.gz, .zip) file name",
        ),
        (
            {"name": "acme-tool", "version": "1.0.0", ":action": "doc_upload"},
            WHEEL,
            "only ':action=file_upload' is supported, not 'doc_upload'",
        ),
    ],
)
def test_forms_gitlab_would_store_wrongly(
    fields: dict[str, str], filename: str, reason: str
) -> None:
    assert form_problem(FormData(list(fields.items())), filename) == reason


def test_upload_timeout_is_a_setting_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text("[gitlab]\nurl = 'https://g'\n")
    assert load(path).gitlab.upload_timeout == 300.0
    path.write_text("[gitlab]\nurl = 'https://g'\ntimeout = 5\nupload_timeout = 90\n")
    gitlab = load(path).gitlab
    assert (gitlab.timeout, gitlab.upload_timeout) == (5.0, 90.0)
    path.write_text("[gitlab]\nurl = 'https://g'\nupload_timeout = 0\n")
    with pytest.raises(ConfigError, match=r"gitlab\.upload_timeout: must be positive"):
        load(path)


@respx.mock
async def test_the_wait_for_gitlabs_answer_to_an_upload_is_bounded_by_upload_timeout() -> None:
    seen: list[dict[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(201, json={"message": "201 Created"})

    respx.post("http://gitlab.internal/api/v4/projects/11/packages/pypi").mock(side_effect=answer)
    gitlab = GitLabConfig(url="http://gitlab.internal", token="t", timeout=4, upload_timeout=7)
    async with httpx2.AsyncClient() as client:
        source = GitLabProject(
            SourceConfig("platform", "gitlab_project", "11"), gitlab, Upstream(client)
        )
        data = b"x" * 100
        auth = httpx2.BasicAuth("u", "p")
        sent = await source.upload({"name": "a"}, "a-1.0.tar.gz", io.BytesIO(data), 100, auth)
    assert sent.status == 201
    assert seen == [{"connect": 4.0, "read": 7.0, "write": 4.0, "pool": 4.0}]
