"""Views, the operator API and the deny rules end to end, with the real clients: uv pinning a
package to a view, pip through a view, twine publishing straight to GitLab and the CI job's
refresh making the release installable at once, and uv passing by a denied and a malicious
release while an exact pin of either fails naming its rule. One proxy for the module, in front of
the GitLab double."""

import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import isolated_env, pip_install, run, twine_upload, uv_binary, uv_install
from tests.osv_export import advisory, write_export
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve

TOKEN = "glpat-operate-reader"
JOB_TOKEN = "glcbt-operate-job"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@dataclass
class World:
    proxy: ProxyProcess
    gitlab: GitLabDouble
    gitlab_url: str


def _installed(target: Path) -> set[str]:
    return {p.name for p in target.iterdir() if p.name.endswith(".dist-info")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """platform (11): shared 1.0, ci-built 1.0, acme-core 1.0 and 1.1.0 (denied), evil-pkg 1.0
    and 2.0 (a malicious-package advisory); ml (12): shared 2.0, ml-lib. The release view reads
    platform only. A CI job token may publish to platform straight to GitLab."""
    root = tmp_path_factory.mktemp("operate")
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_project(12, "acme/ml")
    double.add_token(TOKEN, read={11, 12})
    double.add_job_token(JOB_TOKEN, write={11})
    for project, name, version in [
        (11, "shared", "1.0"),
        (11, "ci-built", "1.0"),
        (11, "acme-core", "1.0"),
        (11, "acme-core", "1.1.0"),
        (11, "evil-pkg", "1.0"),
        (11, "evil-pkg", "2.0"),
        (12, "shared", "2.0"),
        (12, "ml-lib", "1.0"),
    ]:
        double.add_package_file(project, name, version, *make_wheel(name, version))
    osv = write_export(root / "osv.zip", [advisory("MAL-2025-1", "evil-pkg", versions=["2.0"])])
    extra = f"""
[[views]]
name = "release"
sources = ["platform"]

[auth]
passthrough = true

[policy]
deny = ["acme-core==1.1.0", "*-win_amd64.whl"]
vulnerabilities = "{osv}"
"""
    with serve(double.app) as gitlab:
        sources = [{"name": "platform", "gitlab_project": 11}, {"name": "ml", "gitlab_project": 12}]
        config = write_config(root, gitlab.url, sources, token=TOKEN, index_ttl=3600, extra=extra)
        proxy = start_proxy(config)
        try:
            yield World(proxy, double, gitlab.url)
        finally:
            proxy.stop()
        assert "Traceback" not in proxy.log(), proxy.log()
        assert JOB_TOKEN not in proxy.log()


def test_uv_pins_a_package_to_a_view(world: World, tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        'dependencies = ["shared", "ml-lib"]\n\n'
        f'[[tool.uv.index]]\nname = "release"\nurl = "{world.proxy.url}/release/simple/"\n'
        "explicit = true\n\n"
        '[tool.uv.sources]\nshared = { index = "release" }\n'
    )
    command = [uv_binary(), "lock", "--python", sys.executable]
    command += ["--default-index", f"{world.proxy.url}/simple/", "--directory", str(project)]
    env = isolated_env(tmp_path / "home")
    del env["UV_NO_CONFIG"]  # the project's own [tool.uv] is what this test is about
    result = run(command, env)
    assert result.returncode == 0, result.stderr
    locked = tomllib.loads((project / "uv.lock").read_text())
    packages = {p["name"]: p for p in locked["package"]}
    # merged, /simple/ lists ml's shared 2.0; the view has platform's 1.0 alone
    assert packages["shared"]["version"] == "1.0"
    assert packages["shared"]["source"] == {"registry": f"{world.proxy.url}/release/simple/"}
    assert packages["ml-lib"]["source"] == {"registry": f"{world.proxy.url}/simple/"}


def test_pip_installs_through_a_view_what_its_sources_have(world: World, tmp_path: Path) -> None:
    index = f"{world.proxy.url}/release/simple/"
    done = pip_install(index, tmp_path / "site", "shared", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert _installed(tmp_path / "site") == {"shared-1.0.dist-info"}
    assert httpx2.get(f"{index}ml-lib/").status_code == 404  # ml is not in the view


def test_a_ci_job_publishes_straight_to_gitlab_and_its_refresh_lists_it_at_once(
    world: World, tmp_path: Path
) -> None:
    page = f"{world.proxy.url}/simple/ci-built/"
    assert httpx2.get(page, headers=JSON).json()["versions"] == ["1.0"]  # kept for an hour
    dist = tmp_path / "dist"
    dist.mkdir()
    filename, data = make_wheel("ci-built", "2.0")
    (dist / filename).write_bytes(data)
    published = twine_upload(
        f"{world.gitlab_url}/api/v4/projects/11/packages/pypi",
        [dist / filename],
        user="gitlab-ci-token",
        password=JOB_TOKEN,
        home=tmp_path / "home",
    )
    assert published.returncode == 0, published.stdout + published.stderr
    assert httpx2.get(page, headers=JSON).json()["versions"] == ["1.0"]  # not told yet
    refreshed = httpx2.post(
        f"{world.proxy.url}/-/refresh/ci-built", auth=("gitlab-ci-token", JOB_TOKEN), timeout=30
    )
    assert refreshed.status_code == 200, refreshed.text
    said = {s["source"]: s for s in refreshed.json()["sources"]}
    assert said["platform"]["versions"] == ["1.0", "2.0"]
    done = uv_install(
        f"{world.proxy.url}/simple/", tmp_path / "site", "ci-built==2.0", home=tmp_path / "home"
    )
    assert done.returncode == 0, done.stderr
    assert _installed(tmp_path / "site") == {"ci_built-2.0.dist-info"}
    stranger = httpx2.post(f"{world.proxy.url}/-/refresh/ci-built", auth=("someone", "guess"))
    assert stranger.status_code == 401  # GitLab's verdict on credentials it does not know


def test_uv_passes_by_denied_and_malicious_releases_and_a_pin_names_the_rule(
    world: World, tmp_path: Path
) -> None:
    index, home = f"{world.proxy.url}/simple/", tmp_path / "home"
    done = uv_install(index, tmp_path / "site", "acme-core", "evil-pkg", home=home)
    assert done.returncode == 0, done.stderr
    assert _installed(tmp_path / "site") == {"acme_core-1.0.dist-info", "evil_pkg-1.0.dist-info"}
    denied = uv_install(index, tmp_path / "pinned", "acme-core==1.1.0", home=home)
    assert denied.returncode != 0
    assert "denied by [policy] deny rule 'acme-core==1.1.0'" in denied.stderr, denied.stderr
    blocked = uv_install(index, tmp_path / "evil", "evil-pkg==2.0", home=home)
    assert blocked.returncode != 0
    assert "MAL-2025-1 reports a malicious package" in blocked.stderr, blocked.stderr
    status = httpx2.get(f"{world.proxy.url}/").text
    assert "Deny acme-core==1.1.0" in status and "file requests refused since start" in status
