"""Issue 2 end to end: real pip and uv through the proxy over several GitLab projects and groups."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import pip_install, uv_install
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve

TOKEN = "glpat-proxy-reader"


@pytest.fixture(scope="module")
def gitlab() -> Iterator[tuple[GitLabDouble, str]]:
    """Two projects in group acme, one project elsewhere; acme.utils depends on a package of
    another project; `shared` exists in two projects."""
    double = GitLabDouble()
    double.add_group(100, "acme")
    double.add_project(11, "acme/platform")
    double.add_project(12, "acme/libs/core")
    double.add_project(21, "tools/cli", public=True)
    double.add_token(TOKEN, read={11, 12, 21})
    name, data = make_wheel("Acme.Utils", "2.0.0", requires_dist=["acme-core>=1"])
    double.add_package_file(11, "Acme.Utils", "2.0.0", name, data, requires_python=">=3.8")
    name, data = make_wheel("acme-core", "1.1.0")
    double.add_package_file(12, "acme-core", "1.1.0", name, data)
    name, data = make_wheel("shared", "1.0")
    double.add_package_file(11, "shared", "1.0", name, data)
    double.add_package_file(21, "shared", "1.0", name, data)  # same file: listed once
    name, data = make_wheel("shared", "2.0")
    double.add_package_file(21, "shared", "2.0", name, data)
    with serve(double.app) as server:
        yield double, server.url


@pytest.fixture(scope="module")
def proxy(gitlab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    _, url = gitlab
    directory = tmp_path_factory.mktemp("proxy")
    sources = [
        {"name": "platform", "gitlab_project": "acme/platform"},
        {"name": "cli", "gitlab_project": 21},
        {"name": "acme", "gitlab_group": "acme"},
    ]
    config = write_config(directory, url, sources, token=TOKEN)
    process = start_proxy(config)
    yield process
    process.stop()


def test_pip_installs_across_projects_with_an_unnormalized_name(proxy, tmp_path: Path) -> None:
    result = pip_install(
        f"{proxy.url}/simple/", tmp_path / "site", "Acme.Utils", home=tmp_path / "home"
    )
    assert result.returncode == 0, result.stderr
    installed = {p.name for p in (tmp_path / "site").iterdir()}
    assert "acme_utils-2.0.0.dist-info" in installed
    assert "acme_core-1.1.0.dist-info" in installed  # the dependency, from another project


def test_uv_installs_across_projects(proxy, tmp_path: Path) -> None:
    result = uv_install(
        f"{proxy.url}/simple/", tmp_path / "site", "Acme.Utils", home=tmp_path / "home"
    )
    assert result.returncode == 0, result.stderr
    installed = {p.name for p in (tmp_path / "site").iterdir()}
    assert {"acme_utils-2.0.0.dist-info", "acme_core-1.1.0.dist-info"} <= installed


def test_name_in_second_project_only_installs(proxy, tmp_path: Path) -> None:
    result = pip_install(
        f"{proxy.url}/simple/", tmp_path / "site", "shared==2.0", home=tmp_path / "home"
    )
    assert result.returncode == 0, result.stderr


def test_missing_everywhere_is_a_prompt_404_that_never_follows_gitlabs_redirect(
    gitlab, proxy
) -> None:
    double, _ = gitlab
    started = time.monotonic()
    response = httpx2.get(f"{proxy.url}/simple/requests/")
    assert response.status_code == 404
    assert "requests" in response.text
    assert time.monotonic() - started < 5
    # GitLab answered 302 to the public index: the proxy never went there.
    assert (
        double.count("GET", "/api/v4/projects/acme%2Fplatform/packages/pypi/simple/requests") == 1
    )


def test_merged_page_lists_a_shared_file_once_with_proxy_links(proxy) -> None:
    response = httpx2.get(f"{proxy.url}/simple/shared/", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Accept" in [v.strip() for v in response.headers["vary"].split(",")]
    assert response.text.count("shared-1.0-py3-none-any.whl</a>") == 1
    assert "shared-2.0-py3-none-any.whl" in response.text
    assert "gitlab.example.com" not in response.text
    assert 'href="../../files/' in response.text


def test_json_by_accept_and_by_format(proxy) -> None:
    json_type = "application/vnd.pypi.simple.v1+json"
    response = httpx2.get(f"{proxy.url}/simple/acme-utils/", headers={"Accept": json_type})
    assert response.headers["content-type"] == json_type
    document = response.json()
    assert document["name"] == "acme-utils"
    (file,) = document["files"]
    assert file["requires-python"] == ">=3.8"
    assert file["url"].startswith("../../files/")
    by_format = httpx2.get(f"{proxy.url}/simple/acme-utils/", params={"format": json_type})
    assert by_format.json() == document
    # An unencoded "+" arrives as a space; it still means the JSON type.
    assert httpx2.get(f"{proxy.url}/simple/acme-utils/?format={json_type}").json() == document
    refused = httpx2.get(f"{proxy.url}/simple/acme-utils/", headers={"Accept": "image/png"})
    assert refused.status_code == 406


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple/Acme.Utils/", "../acme-utils/"),
        ("/simple/acme_utils", "acme-utils/"),
        ("/simple/acme-utils", "acme-utils/"),
        ("/simple", "simple/"),
    ],
)
def test_unnormalized_and_slashless_names_redirect(proxy, path: str, location: str) -> None:
    response = httpx2.get(f"{proxy.url}{path}")
    assert response.status_code == 301
    assert response.headers["location"] == location


@pytest.mark.parametrize("path", ["/simple/-bad-/", "/simple/a%20b/", "/files/nothex/x.whl"])
def test_invalid_input_is_a_4xx_with_one_line(proxy, path: str) -> None:
    response = httpx2.get(f"{proxy.url}{path}")
    assert 400 <= response.status_code < 500
    assert response.text.count("\n") == 1


def test_root_index_is_the_union_of_all_sources(proxy) -> None:
    response = httpx2.get(
        f"{proxy.url}/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    names = {p["name"] for p in response.json()["projects"]}
    assert names == {"acme-utils", "acme-core", "shared"}


def test_files_follow_object_storage_without_leaking_credentials(gitlab, proxy, tmp_path) -> None:
    double, _ = gitlab
    name, data = make_wheel("stored", "1.0")  # never asked before: fetched while redirected
    double.add_package_file(11, "stored", "1.0", name, data)
    with serve(double.app) as storage:
        double.object_storage_url = storage.url
        try:
            result = pip_install(
                f"{proxy.url}/simple/", tmp_path / "site", "stored==1.0", home=tmp_path / "home"
            )
        finally:
            double.object_storage_url = None
    assert result.returncode == 0, result.stderr
    storage_requests = [r for r in double.requests if r.path.startswith("/object-storage/")]
    assert storage_requests
    for request in storage_requests:
        assert "authorization" not in request.headers
        assert "private-token" not in request.headers
    assert TOKEN not in proxy.log()
