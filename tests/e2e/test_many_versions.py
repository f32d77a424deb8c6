"""End to end, a GitLab project with 2,000 versions of one name (a nightly a pipeline
publishes), behind the proxy with two workers.

A cold page costs the simple page and one Packages API listing request per 100 versions, never a
request per version; every file carries its version's upload time at once, its exact size and
upload time follow in the background (one `package_files` call per version, kept for good), and
pip, uv and `uv --exclude-newer` resolve against the page before and after the details are exact.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
PROJECT = 11
NAME = "nightly"
VERSIONS = 2000
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SIMPLE = rf"/api/v4/projects/{PROJECT}/packages/pypi/simple/{NAME}"
LISTING = rf"/api/v4/projects/{PROJECT}/packages"
PACKAGE_FILES = rf"/api/v4/projects/{PROJECT}/packages/\d+/package_files"
SOURCES = [{"name": "nightlies", "gitlab_project": PROJECT}]


def _double() -> GitLabDouble:
    double = GitLabDouble()
    double.add_project(PROJECT, "acme/nightly", public=True)
    double.add_versions(PROJECT, NAME, VERSIONS, first=T0, every=timedelta(hours=1))
    return double


def _page(proxy: ProxyProcess, name: str = NAME) -> dict:
    response = httpx2.get(f"{proxy.url}/simple/{name}/", headers=JSON, timeout=60)
    response.raise_for_status()
    return response.json()


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _installed(target: Path) -> set[str]:
    return {p.name for p in target.iterdir() if p.name.endswith(".dist-info")}


def _exact(proxy: ProxyProcess, name: str = NAME) -> dict | None:
    page = _page(proxy, name)
    return page if page["meta"]["api-version"] == "1.1" else None


@dataclass
class World:
    proxy: ProxyProcess
    double: GitLabDouble
    cold: dict  # the first answer for the name
    cold_requests: tuple[int, int, int]  # (simple pages, listing pages, package_files) by then


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    double = _double()
    with serve(double.app) as gitlab:
        directory = tmp_path_factory.mktemp("versions")
        # a budget that lets the background fill all 2,000 versions within the test
        config = write_config(
            directory, gitlab.url, SOURCES, gitlab={"max_requests_per_minute": 100_000}
        )
        proxy = start_proxy(config, "--workers", "2")
        try:
            # package_files answers slowly while the cold page is asked: those the page waited
            # for, if it did, have all been asked for when its answer comes
            double.latency_for[PACKAGE_FILES] = 1.0
            cold = _page(proxy)
            patterns = (SIMPLE, LISTING, PACKAGE_FILES)
            counts = tuple(len(double.matching(p)) for p in patterns)
            double.latency_for.clear()
            yield World(proxy, double, cold, counts)
        finally:
            proxy.stop()


def test_a_cold_page_costs_one_listing_request_per_100_versions_never_one_per_version(
    world: World,
) -> None:
    simple, listing, package_files = world.cold_requests
    assert (simple, listing) == (1, VERSIONS // 100)
    # the background's first few (4 at a time) may be on their way; one per version is 2,000
    assert package_files <= 100
    files = world.cold["files"]
    assert len(files) == VERSIONS
    # the listing's creation time of each version, at once; sizes only once exact (PEP 700
    # makes `size` mandatory in 1.1, so the page says 1.0 until every size is known)
    assert world.cold["meta"]["api-version"] == "1.0"
    for entry in files:
        if "size" not in entry:
            version = entry["filename"].split("-")[1]
            hours = int(version.rsplit(".", 1)[1])
            assert entry["upload-time"] == _stamp(T0 + timedelta(hours=hours))


def test_exact_details_arrive_in_the_background_one_call_per_version(world: World) -> None:
    page = wait_until(lambda: _exact(world.proxy), "every file's exact size and upload time", 120)
    stored = {f.filename: f for f in world.double.files}
    for entry in page["files"]:
        file = stored[entry["filename"]]
        assert entry["size"] == len(file.content)
        assert entry["upload-time"] == _stamp(file.created_at)
    assert len(world.double.matching(PACKAGE_FILES)) == VERSIONS
    assert len(world.double.matching(LISTING)) == VERSIONS // 100  # nothing listed again


def _settled(proxy: ProxyProcess) -> bool:
    """Every file's details exact and the newest wheels' metadata read (the warm-up's 4)."""
    page = _exact(proxy)
    return page is not None and sum("core-metadata" in f for f in page["files"]) >= 4


def test_the_warm_page_asks_gitlab_nothing(world: World) -> None:
    wait_until(lambda: _settled(world.proxy), "the background work of the cold page", 120)
    before = len(world.double.requests)
    for _ in range(4):  # both workers
        assert len(_page(world.proxy)["files"]) == VERSIONS
    assert len(world.double.requests) == before


@pytest.mark.parametrize("install", [pip_install, uv_install], ids=["pip", "uv"])
def test_pip_and_uv_install_the_newest_version(world: World, tmp_path: Path, install) -> None:
    result = install(f"{world.proxy.url}/simple/", tmp_path / "site", NAME, home=tmp_path / "h")
    assert result.returncode == 0, result.stderr
    assert _installed(tmp_path / "site") == {f"{NAME}-1.0.{VERSIONS - 1}.dist-info"}


def test_uv_exclude_newer_picks_the_version_uploaded_before_once_details_are_known(
    world: World, tmp_path: Path
) -> None:
    wait_until(lambda: _exact(world.proxy), "every file's exact size and upload time", 120)
    cutoff = _stamp(T0 + timedelta(hours=1500, minutes=30))
    result = uv_install(
        f"{world.proxy.url}/simple/",
        tmp_path / "site",
        NAME,
        home=tmp_path / "h",
        extra=("--exclude-newer", cutoff),
    )
    assert result.returncode == 0, result.stderr
    assert _installed(tmp_path / "site") == {f"{NAME}-1.0.1500.dist-info"}


def test_before_details_are_exact_uv_uses_the_listings_times_and_a_new_version_costs_one_listing(
    tmp_path: Path,
) -> None:
    double = _double()
    with serve(double.app) as gitlab:
        # a small budget: the background may spend only its upper half, so the details stay
        # approximate for this whole test, and every page revalidates (index_ttl = 0)
        config = write_config(
            tmp_path, gitlab.url, SOURCES, index_ttl=0, gitlab={"max_requests_per_minute": 60}
        )
        proxy = start_proxy(config)
        try:
            page = _page(proxy)
            assert page["meta"]["api-version"] == "1.0"
            assert all("upload-time" in entry for entry in page["files"])
            # uv reads upload-time under api-version 1.0 too
            cutoff = _stamp(T0 + timedelta(hours=700, minutes=30))
            result = uv_install(
                f"{proxy.url}/simple/",
                tmp_path / "site",
                NAME,
                home=tmp_path / "h",
                extra=("--exclude-newer", cutoff),
            )
            assert result.returncode == 0, result.stderr
            assert _installed(tmp_path / "site") == {f"{NAME}-1.0.700.dist-info"}
            # tonight's version: the page again, and the listing's first page finds it
            created = T0 + timedelta(hours=VERSIONS)
            filename, data = make_wheel(NAME, f"1.0.{VERSIONS}")
            double.add_package_file(
                PROJECT, NAME, f"1.0.{VERSIONS}", filename, data, created_at=created
            )
            listed = len(double.matching(LISTING))
            page = _page(proxy)
            assert len(double.matching(LISTING)) == listed + 1
            newest = next(e for e in page["files"] if e["filename"] == filename)
            assert newest["upload-time"] == _stamp(created)
        finally:
            proxy.stop()


def test_a_short_name_that_thousands_of_packages_contain_is_bounded_on_the_clients_time(
    tmp_path: Path,
) -> None:
    double = GitLabDouble()
    double.add_project(PROJECT, "acme/nightly", public=True)
    double.add_versions(PROJECT, "core", 3, first=T0)
    for n in range(2500):  # newer packages whose names contain "core": core's are on page 26
        filename, data = make_wheel(f"core-plugin-{n}", "1.0")
        created = T0 + timedelta(days=1, minutes=n)
        double.add_package_file(
            PROJECT, f"core-plugin-{n}", "1.0", filename, data, created_at=created
        )
    with serve(double.app) as gitlab:
        config = write_config(
            tmp_path, gitlab.url, SOURCES, gitlab={"max_requests_per_minute": 100_000}
        )
        proxy = start_proxy(config)
        try:
            # listing pages answer slowly while the page is asked: the background, which reads
            # on one page at a time, has read at most one more when the answer comes
            double.latency_for[LISTING] = 0.5
            response = httpx2.get(f"{proxy.url}/simple/core/", headers=JSON, timeout=60)
            listed = len(double.matching(LISTING))
            double.latency_for.clear()
            assert response.status_code == 200
            assert [f["filename"] for f in response.json()["files"]] == [
                f"core-1.0.{n}-py3-none-any.whl" for n in range(3)
            ]
            assert listed <= 4 + 1  # the first page, the one 3 versions need, 2 of slack
            # the background reads the rest of the listing once, then asks for core's files
            page = wait_until(lambda: _exact(proxy, "core"), "core's exact details", 60)
            assert [f["upload-time"] for f in page["files"]] == [
                _stamp(T0 + timedelta(hours=n)) for n in range(3)
            ]
            assert len(double.matching(LISTING)) == 26  # 2,503 packages: each page once
            assert len(double.matching(PACKAGE_FILES)) == 3
        finally:
            proxy.stop()
