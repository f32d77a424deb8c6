"""Where uploads are taken: PyPI's /legacy/, the index URL without /simple/ (`/`) and /upload/,
each with and without a source, answered in place; a GET there explains, `GET /` stays the
status page. The whole app in-process (one for the module), GitLab's upload answered by respx."""

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
import pytest_asyncio
import respx

from gitlab_pypi_proxy.demo.dists import make_wheel
from tests.unit.asgi import running_app

GITLAB = "https://gitlab.example.com"
UPLOAD_11 = f"{GITLAB}/api/v4/projects/11/packages/pypi"
UPLOAD_12 = f"{GITLAB}/api/v4/projects/12/packages/pypi"
CI = ("ci", "ci-password")
DEPLOY_TOKEN = "gldt-upload-urls"
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _config(tmp_path: Path, default_source: bool = True) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[cache]\ndirectory = "{tmp_path / "cache"}"\n'
        f'[gitlab]\nurl = "{GITLAB}"\ntoken = "glpat-reader"\n'
        '[[sources]]\nname = "platform"\ngitlab_project = 11\n'
        '[[sources]]\nname = "tools"\ngitlab_project = 12\n'
        "[auth]\nanonymous_read = false\n"
        + ('[upload]\ndefault_source = "platform"\n' if default_source else "")
        + f'[[users]]\nname = "ci"\npassword = "{CI[1]}"\nread = ["*"]\n'
        f'upload = ["platform", "tools"]\ngitlab_token = "{DEPLOY_TOKEN}"\n'
    )
    return path


async def _client(path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    async with running_app(path) as client:
        yield client


@pytest.fixture(scope="module")
def gitlab() -> Iterator[respx.MockRouter]:
    """GitLab takes every upload; anything else the proxy asks (warming, probes) is a 404."""
    with respx.mock(assert_all_called=False) as router:
        router.post(UPLOAD_11).respond(201, json={"message": "201 Created"})
        router.post(UPLOAD_12).respond(201, json={"message": "201 Created"})
        router.route().respond(404, json={"message": "404 Not Found"})
        yield router


@pytest.fixture(autouse=True)
def _no_calls_yet(gitlab: respx.MockRouter) -> None:
    gitlab.calls.clear()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(
    gitlab: respx.MockRouter, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx2.AsyncClient]:
    async for client in _client(_config(tmp_path_factory.mktemp("upload-urls"))):
        yield client


async def _upload(client: httpx2.AsyncClient, path: str, **kwargs: object) -> httpx2.Response:
    """The form twine sends."""
    filename, data = make_wheel("acme-tool", "1.0")
    return await client.post(
        path,
        data={"name": "acme-tool", "version": "1.0", ":action": "file_upload"},
        files={"content": (filename, data)},
        **kwargs,  # type: ignore[arg-type]
    )


def _token(request: httpx.Request) -> str:
    return base64.b64decode(request.headers["authorization"].split()[1]).decode().split(":")[1]


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/legacy/", UPLOAD_11),
        ("/legacy", UPLOAD_11),
        ("/", UPLOAD_11),
        ("/upload/", UPLOAD_11),
        ("/legacy/tools/", UPLOAD_12),
        ("/legacy/tools", UPLOAD_12),
    ],
)
async def test_every_upload_url_is_answered_in_place(
    client: httpx2.AsyncClient, gitlab: respx.MockRouter, path: str, target: str
) -> None:
    answer = await _upload(client, path, auth=CI)
    assert (answer.status_code, answer.text) == (
        201,
        f"uploaded acme_tool-1.0-py3-none-any.whl to {'tools' if '12' in target else 'platform'}\n",
    )
    (call,) = [c for c in gitlab.calls if c.request.method == "POST"]
    assert str(call.request.url) == target
    assert _token(call.request) == DEPLOY_TOKEN


@pytest.mark.parametrize("path", ["/", "/legacy/", "/legacy/tools/"])
async def test_an_upload_without_credentials_is_challenged(
    client: httpx2.AsyncClient, gitlab: respx.MockRouter, path: str
) -> None:
    answer = await _upload(client, path)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic ")
    assert answer.text == "uploads need a valid user name and password\n"
    assert not [c for c in gitlab.calls if c.request.method == "POST"]


async def test_an_unknown_source_is_a_404_naming_it(
    client: httpx2.AsyncClient, gitlab: respx.MockRouter
) -> None:
    answer = await _upload(client, "/legacy/nope/", auth=CI)
    assert (answer.status_code, answer.text) == (
        404,
        "no gitlab_project source named 'nope' to upload to\n",
    )


@pytest.mark.parametrize("path", ["/legacy/", "/legacy", "/legacy/tools/", "/upload/"])
async def test_a_get_on_an_upload_url_says_how_to_upload_without_credentials(
    client: httpx2.AsyncClient, gitlab: respx.MockRouter, path: str
) -> None:
    answer = await client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert "twine upload --repository-url http://proxy/legacy/ dist/*" in text
    assert "uv publish --publish-url http://proxy/legacy/ dist/*" in text
    assert "Files go to the proxy's default GitLab project; to choose another" in text
    assert "upload to http://proxy/legacy/<source>/,\nnaming a source of this proxy" in text
    assert "HTTP basic auth" in text and "__token__" in text
    assert "platform" not in text and "tools" not in text  # names no source to a stranger
    head = await client.head(path)
    assert head.status_code == 200


async def test_without_a_default_source_the_explanation_says_to_name_one(
    tmp_path: Path, gitlab: respx.MockRouter
) -> None:
    async for client in _client(_config(tmp_path, default_source=False)):
        text = (await client.get("/legacy/")).text
        assert "No default GitLab project is set: upload to http://proxy/legacy/<source>/" in text


async def test_get_slash_is_still_the_status_page(
    client: httpx2.AsyncClient, gitlab: respx.MockRouter
) -> None:
    assert (await client.get("/")).status_code == 401  # guarded like the index
    page = await client.get("/", auth=CI)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
