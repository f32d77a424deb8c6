"""End to end, a richer index than GitLab's own. PEP 658 metadata sidecars that pip's and
uv's resolvers use instead of downloading wheels, PEP 700 upload times for uv's --exclude-newer,
and versions marked yanked in the configuration.
"""

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import pip_install, uv_install
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
WHEELS = [
    # meta-app 2.0 needs a meta-dep that does not exist: the resolver reads its metadata, backtracks
    ("meta-app", "2.0", ["meta-dep>=9"], datetime(2024, 5, 1, tzinfo=UTC)),
    ("meta-app", "1.0", ["meta-dep"], datetime(2024, 1, 1, tzinfo=UTC)),
    ("meta-dep", "1.0", [], datetime(2024, 1, 10, tzinfo=UTC)),
    ("meta-dep", "2.0", [], datetime(2024, 6, 1, tzinfo=UTC)),
    ("old-one", "1.0", [], datetime(2023, 1, 1, tzinfo=UTC)),
    ("old-one", "1.1", [], datetime(2023, 2, 1, tzinfo=UTC)),
]


def _page(proxy: ProxyProcess, name: str) -> dict:
    response = httpx2.get(f"{proxy.url}/simple/{name}/", headers=JSON)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[ProxyProcess, GitLabDouble]]:
    tmp_path = tmp_path_factory.mktemp("meta")
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    for name, version, deps, created in WHEELS:
        filename, data = make_wheel(name, version, requires_dist=deps)
        double.add_package_file(11, name, version, filename, data, created_at=created)
    with serve(double.app) as gitlab:
        sources = [{"name": "platform", "gitlab_project": 11}]
        extra = '[sources.yanked]\n"old-one" = ["1.1"]\n'
        config = write_config(tmp_path, gitlab.url, sources, extra=extra)
        proxy = start_proxy(config)
        try:
            for name in ("meta-app", "meta-dep"):
                _page(proxy, name)  # a first page starts reading the wheels' metadata
            wait_until(
                lambda: all(
                    "core-metadata" in f
                    for name in ("meta-app", "meta-dep")
                    for f in _page(proxy, name)["files"]
                ),
                "every wheel's metadata to be advertised",
            )
            yield proxy, double
        finally:
            proxy.stop()


def test_metadata_read_by_ranges_not_by_downloading(world) -> None:
    proxy, double = world
    file_requests = [r for r in double.requests if "/packages/pypi/files/" in r.path]
    assert file_requests
    assert all(r.headers.get("range", "").startswith("bytes=") for r in file_requests)
    page = _page(proxy, "meta-app")
    for entry in page["files"]:
        sidecar = httpx2.get(f"{proxy.url}/simple/meta-app/{entry['url']}.metadata")
        assert sidecar.status_code == 200
        assert f"Version: {entry['filename'].split('-')[1]}" in sidecar.text
        assert entry["core-metadata"]["sha256"] == entry["dist-info-metadata"]["sha256"]
    html = httpx2.get(f"{proxy.url}/simple/meta-app/").text
    assert html.count("data-core-metadata=") == 2
    assert html.count("data-dist-info-metadata=") == 2


def test_unknown_sidecar_is_a_404(world) -> None:
    proxy, _ = world
    missing = httpx2.get(f"{proxy.url}/files/{'a' * 64}/nothing-1.0-py3-none-any.whl.metadata")
    assert missing.status_code == 404
    assert "no core metadata" in missing.text


@pytest.mark.parametrize("install", [pip_install, uv_install], ids=["pip", "uv"])
def test_resolvers_use_the_sidecar(world, tmp_path: Path, install) -> None:
    proxy, _ = world
    before = len(proxy.log())
    result = install(f"{proxy.url}/simple/", tmp_path / "site", "meta-app", home=tmp_path / "h")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "site").iterdir() if p.name.endswith(".dist-info")} == {
        "meta_app-1.0.dist-info",
        "meta_dep-2.0.dist-info",
    }
    requests = re.findall(r'"(?:GET|HEAD) (/files/[^"]+)"', proxy.log()[before:])
    sidecars = {path.rsplit("/", 1)[1] for path in requests if path.endswith(".metadata")}
    wheels = {path.rsplit("/", 1)[1] for path in requests if path.endswith(".whl")}
    # the resolver read meta-app 2.0 from its sidecar, backtracked, and never downloaded it
    assert "meta_app-2.0-py3-none-any.whl.metadata" in sidecars
    assert wheels == {"meta_app-1.0-py3-none-any.whl", "meta_dep-2.0-py3-none-any.whl"}


def test_pep700_sizes_and_upload_times(world) -> None:
    proxy, _ = world
    page = _page(proxy, "meta-dep")
    assert page["meta"]["api-version"] == "1.1"
    assert page["versions"] == ["1.0", "2.0"]
    times = {f["filename"]: f["upload-time"] for f in page["files"]}
    assert times["meta_dep-1.0-py3-none-any.whl"] == "2024-01-10T00:00:00.000000Z"
    assert all(isinstance(f["size"], int) and f["size"] > 0 for f in page["files"])


def test_uv_exclude_newer_picks_the_version_uploaded_before(world, tmp_path: Path) -> None:
    proxy, _ = world
    result = uv_install(
        f"{proxy.url}/simple/",
        tmp_path / "site",
        "meta-dep",
        home=tmp_path / "h",
        extra=("--exclude-newer", "2024-03-01T00:00:00Z"),
    )
    assert result.returncode == 0, result.stderr
    assert "meta_dep-1.0.dist-info" in {p.name for p in (tmp_path / "site").iterdir()}


def test_configured_yanked_version_is_marked_and_skipped(world, tmp_path: Path) -> None:
    proxy, _ = world
    page = _page(proxy, "old-one")
    yanked = {f["filename"]: f.get("yanked", False) for f in page["files"]}
    assert yanked == {"old_one-1.0-py3-none-any.whl": False, "old_one-1.1-py3-none-any.whl": True}
    html = httpx2.get(f"{proxy.url}/simple/old-one/").text
    assert re.search(r'data-yanked=""[^>]*>old_one-1.1-py3-none-any.whl<', html)
    result = pip_install(f"{proxy.url}/simple/", tmp_path / "site", "old-one", home=tmp_path / "h")
    assert result.returncode == 0, result.stderr
    assert "old_one-1.0.dist-info" in {p.name for p in (tmp_path / "site").iterdir()}
