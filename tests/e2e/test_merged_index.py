"""End to end, real pip and uv through the proxy over several GitLab projects and groups;
a view of some of them (uv pinning a package to it, pip through it); a release a CI job
publishes straight to GitLab with twine, listed at once once the job asks the proxy to refresh
it; releases the policy denies or blocks as malicious, which uv passes by and an exact pin of
which fails naming the rule. One proxy for the module."""

import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import (
    isolated_env,
    pip_install,
    printed,
    run,
    twine_upload,
    uv_binary,
    uv_install,
)
from tests.osv_export import advisory, write_export
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve

TOKEN = "glpat-proxy-reader"
JOB_TOKEN = "glcbt-merged-index-job"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture(scope="module")
def gitlab() -> Iterator[tuple[GitLabDouble, str]]:
    """Two projects in group acme, one project elsewhere; acme.utils depends on a package of
    another project; `shared` exists in two projects. In platform: ci-built, which a CI job's
    token may publish to, deny-me 1.1.0 (denied) and evil-pkg 2.0 (a malicious package)."""
    double = GitLabDouble()
    double.add_group(100, "acme")
    double.add_project(11, "acme/platform")
    double.add_project(12, "acme/libs/core")
    double.add_project(21, "tools/cli", public=True)
    double.add_token(TOKEN, read={11, 12, 21})
    double.add_job_token(JOB_TOKEN, write={11})
    for name, version in [("ci-built", "1.0"), ("deny-me", "1.0"), ("deny-me", "1.1.0")]:
        double.add_package_file(11, name, version, *make_wheel(name, version))
    for version in ("1.0", "2.0"):
        double.add_package_file(11, "evil-pkg", version, *make_wheel("evil-pkg", version))
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
    osv = write_export(
        directory / "osv.zip", [advisory("MAL-2025-1", "evil-pkg", versions=["2.0"])]
    )
    extra = f"""
[[views]]
name = "release"
sources = ["platform", "acme"]

[auth]
passthrough = true

[policy]
deny = ["deny-me==1.1.0", "*-win_amd64.whl"]
vulnerabilities = "{osv}"
"""
    config = write_config(directory, url, sources, token=TOKEN, extra=extra)
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
    assert names == {"acme-utils", "acme-core", "shared", "ci-built", "deny-me", "evil-pkg"}


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


def _installed(target: Path) -> set[str]:
    return {p.name for p in target.iterdir() if p.name.endswith(".dist-info")}


def test_uv_pins_a_package_to_a_view(proxy, tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        'dependencies = ["shared", "acme-utils"]\n\n'
        f'[[tool.uv.index]]\nname = "release"\nurl = "{proxy.url}/release/simple/"\n'
        "explicit = true\n\n"
        '[tool.uv.sources]\nshared = { index = "release" }\n'
    )
    command = [uv_binary(), "lock", "--python", sys.executable]
    command += ["--default-index", f"{proxy.url}/simple/", "--directory", str(project)]
    env = isolated_env(tmp_path / "home")
    del env["UV_NO_CONFIG"]  # the project's own [tool.uv] is what this test is about
    result = run(command, env)
    assert result.returncode == 0, result.stderr
    locked = tomllib.loads((project / "uv.lock").read_text())
    packages = {p["name"]: p for p in locked["package"]}
    # merged, /simple/ lists cli's shared 2.0; the view has platform's 1.0 alone
    assert packages["shared"]["version"] == "1.0"
    assert packages["shared"]["source"] == {"registry": f"{proxy.url}/release/simple/"}
    assert packages["acme-utils"]["source"] == {"registry": f"{proxy.url}/simple/"}


def test_pip_installs_through_a_view_what_its_sources_have(proxy, tmp_path: Path) -> None:
    index = f"{proxy.url}/release/simple/"
    done = pip_install(index, tmp_path / "site", "shared", "acme-utils", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert _installed(tmp_path / "site") == {
        "shared-1.0.dist-info",  # not cli's 2.0: cli is not in the view
        "acme_utils-2.0.0.dist-info",
        "acme_core-1.1.0.dist-info",  # from the group, in the view
    }
    refused = httpx2.get(f"{index}shared/", headers=JSON).json()
    assert {f["filename"] for f in refused["files"]} == {"shared-1.0-py3-none-any.whl"}


def test_a_ci_job_publishes_straight_to_gitlab_and_its_refresh_lists_it_at_once(
    gitlab, proxy, tmp_path: Path
) -> None:
    _, gitlab_url = gitlab
    page = f"{proxy.url}/simple/ci-built/"
    assert httpx2.get(page, headers=JSON).json()["versions"] == ["1.0"]  # kept for index_ttl
    dist = tmp_path / "dist"
    dist.mkdir()
    filename, data = make_wheel("ci-built", "2.0")
    (dist / filename).write_bytes(data)
    published = twine_upload(
        f"{gitlab_url}/api/v4/projects/11/packages/pypi",
        [dist / filename],
        user="gitlab-ci-token",
        password=JOB_TOKEN,
        home=tmp_path / "home",
    )
    assert published.returncode == 0, published.stdout + published.stderr
    assert httpx2.get(page, headers=JSON).json()["versions"] == ["1.0"]  # not told yet
    refreshed = httpx2.post(
        f"{proxy.url}/-/refresh/ci-built", auth=("gitlab-ci-token", JOB_TOKEN), timeout=30
    )
    assert refreshed.status_code == 200, refreshed.text
    said = {s["source"]: s for s in refreshed.json()["sources"]}
    assert said["platform"]["versions"] == ["1.0", "2.0"]
    done = uv_install(
        f"{proxy.url}/simple/", tmp_path / "site", "ci-built==2.0", home=tmp_path / "home"
    )
    assert done.returncode == 0, done.stderr
    assert _installed(tmp_path / "site") == {"ci_built-2.0.dist-info"}
    assert httpx2.post(f"{proxy.url}/-/refresh/ci-built").status_code == 401
    assert JOB_TOKEN not in proxy.log()


def test_uv_passes_by_denied_and_malicious_releases_and_a_pin_names_the_rule(
    proxy, tmp_path: Path
) -> None:
    index, home = f"{proxy.url}/simple/", tmp_path / "home"
    done = uv_install(index, tmp_path / "site", "deny-me", "evil-pkg", home=home)
    assert done.returncode == 0, done.stderr
    assert _installed(tmp_path / "site") == {"deny_me-1.0.dist-info", "evil_pkg-1.0.dist-info"}
    denied = uv_install(index, tmp_path / "pinned", "deny-me==1.1.0", home=home)
    assert denied.returncode != 0
    assert "denied by [policy] deny rule 'deny-me==1.1.0'" in printed(denied), denied.stderr
    blocked = uv_install(index, tmp_path / "evil", "evil-pkg==2.0", home=home)
    assert blocked.returncode != 0
    assert "MAL-2025-1 reports a malicious package" in printed(blocked), blocked.stderr
    status = httpx2.get(f"{proxy.url}/").text
    assert "Deny deny-me==1.1.0" in status and "file requests refused since start" in status
