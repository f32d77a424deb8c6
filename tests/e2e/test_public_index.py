"""End to end, a real public index (pypiserver) behind the proxy, without dependency
confusion: a name a GitLab source owns never comes from the public index, even when GitLab is down.
"""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import clear_client_caches, pip_install, uv_install
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.public_index import PublicIndex, pypiserver
from tests.servers import Server, serve
from tests.waiting import wait_until

TOKEN = "glpat-public-test"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _installed(target: Path) -> set[str]:
    return {p.name for p in target.iterdir() if p.name.endswith(".dist-info")}


World = tuple[ProxyProcess, GitLabDouble, Server, PublicIndex]


@contextmanager
def _world(tmp_path: Path) -> Iterator[World]:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token(TOKEN, read={11})
    for name, version, deps in [
        ("private-app", "1.0", ["pub-only", "shared-name"]),
        ("shared-name", "1.0", []),
        ("fragile", "1.0", []),
        ("opened-up", "1.0", []),
    ]:
        filename, data = make_wheel(name, version, requires_dist=deps)
        double.add_package_file(11, name, version, filename, data)
    with pypiserver(tmp_path / "public-wheels") as public, serve(double.app) as gitlab:
        for name, version in [
            ("pub-only", "1.0"),
            ("shared-name", "9.0"),
            ("fragile", "9.0"),
            ("opened-up", "9.0"),
        ]:
            public.add(*make_wheel(name, version))
        sources = [
            {"name": "platform", "gitlab_project": 11, "allow_public": ["opened-up"]},
            {"name": "public", "url": public.url},
        ]
        # index_ttl = 0: every request revalidates, so with GitLab down the stale path serves
        config = write_config(tmp_path, gitlab.url, sources, token=TOKEN, index_ttl=0)
        proxy = start_proxy(config)
        try:
            yield proxy, double, gitlab, public
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Shared by the tests that leave both upstreams running."""
    with _world(tmp_path_factory.mktemp("public")) as running:
        yield running


@pytest.fixture
def own_world(tmp_path: Path) -> Iterator[World]:
    """For a test that stops the upstreams."""
    with _world(tmp_path) as running:
        yield running


@pytest.mark.parametrize("install", [pip_install, uv_install], ids=["pip", "uv"])
def test_public_and_private_names_each_from_their_owner(world, tmp_path: Path, install) -> None:
    proxy, double, _, _ = world
    target = tmp_path / "site"
    result = install(f"{proxy.url}/simple/", target, "private-app", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    # shared-name 9.0 on the public index is higher, but GitLab owns the name
    assert _installed(target) == {
        "private_app-1.0.dist-info",
        "pub_only-1.0.dist-info",
        "shared_name-1.0.dist-info",
    }
    public_page = httpx2.get(f"{proxy.url}/simple/pub-only/", headers=JSON).json()
    assert public_page["_source"] == "public"
    assert [f["filename"] for f in public_page["files"]] == ["pub_only-1.0-py3-none-any.whl"]
    assert public_page["files"][0]["url"].startswith("../../files/")
    shared = httpx2.get(f"{proxy.url}/simple/shared-name/").text
    assert "<!-- sources: platform -->" in shared
    assert "9.0" not in shared
    wait_until(
        lambda: "private name shared-name also exists on public source public" in proxy.log(),
        "the dependency-confusion warning",
    )
    assert double.count("GET", "/api/v4/projects/11/packages/pypi/simple/pub-only") >= 1


def test_public_wheels_get_core_metadata_too(world) -> None:
    proxy, _, _, _ = world

    def files() -> list[dict]:
        return httpx2.get(f"{proxy.url}/simple/pub-only/", headers=JSON).json()["files"]

    # pypiserver advertises none; the proxy reads it from the wheel by range reads
    wait_until(lambda: "core-metadata" in files()[0], "pub-only's metadata to be advertised")
    (entry,) = files()
    sidecar = httpx2.get(f"{proxy.url}/simple/pub-only/{entry['url']}.metadata")
    assert sidecar.status_code == 200
    assert "Name: pub-only" in sidecar.text
    assert entry["core-metadata"]["sha256"] == hashlib.sha256(sidecar.content).hexdigest()


def test_gitlab_down_public_from_cache_private_never_public(own_world, tmp_path: Path) -> None:
    proxy, _, gitlab, public = own_world
    home = tmp_path / "home"
    first = pip_install(f"{proxy.url}/simple/", tmp_path / "one", "private-app", home=home)
    assert first.returncode == 0, first.stderr
    gitlab.stop()
    # never asked while GitLab was up: fail closed rather than take the public 9.0
    fragile = httpx2.get(f"{proxy.url}/simple/fragile/")
    assert fragile.status_code == 503
    assert "platform" in fragile.text
    assert "fragile" in fragile.text
    failed = pip_install(f"{proxy.url}/simple/", tmp_path / "three", "fragile", home=home)
    assert failed.returncode != 0
    # unless the owner lets the public index answer that name
    opened = httpx2.get(f"{proxy.url}/simple/opened-up/", headers=JSON).json()
    assert opened["_source"] == "public"
    public.stop()
    clear_client_caches(home)
    second = uv_install(f"{proxy.url}/simple/", tmp_path / "two", "private-app", home=home)
    assert second.returncode == 0, second.stderr
    assert _installed(tmp_path / "two") == {
        "private_app-1.0.dist-info",
        "pub_only-1.0.dist-info",
        "shared_name-1.0.dist-info",
    }
    assert TOKEN not in proxy.log()
