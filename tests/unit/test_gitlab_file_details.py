"""PEP 700 for GitLab files: upload times from the Packages API listing on the page's time, exact
sizes and times from `package_files` in the background, kept for good, bounded in requests."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.model import ProjectPage
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.upstream import Upstream
from gitlab_pypi_proxy.storage.details import DetailsStore
from tests.unit.indexes import composed
from tests.unit.test_gitlab_source import API, page

BASE = f"{API}/projects/acme%2Fplatform"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _sha(n: int) -> str:
    return f"{n:064x}"


def _link(filename: str, sha: str) -> str:
    return f'<a href="https://g/files/{sha}/{filename}#sha256={sha}">{filename}</a>'


def _source(client, store: DetailsStore | None = None, changed=None) -> GitLabProject:
    gitlab = GitLabConfig(url="http://gitlab.internal:8080", token="glpat-t0ken", timeout=2)
    config = SourceConfig(name="platform", kind="gitlab_project", target="acme/platform")
    return GitLabProject(config, gitlab, Upstream(client), details=store, changed=changed)


async def with_details(source: GitLabProject, page: ProjectPage) -> ProjectPage:
    """A cached page with the exact details learnt in the background since it was fetched, as
    the index serves it."""
    files = await source.details.refine(page.name, page.files)
    return page if files is None else replace(page, files=tuple(files))


class Registry:
    """Packages of one project as GitLab's Packages API lists them: newest first, 100 a page,
    `package_name` a substring match, no totals past `counted` items."""

    def __init__(self, counted: int = 10_000) -> None:
        self.packages: list[dict] = []
        self.files: dict[int, list[dict]] = {}
        self.counted = counted
        self.listed_pages: list[int] = []
        self.files_asked: list[int] = []

    def add(self, name: str, version: str, created: datetime, *files: tuple[str, str]) -> int:
        package_id = 100 + len(self.packages)
        stamp = created.isoformat().replace("+00:00", "Z")
        self.packages.append(
            {"id": package_id, "name": name, "version": version, "created_at": stamp}
        )
        self.files[package_id] = [
            {
                "file_name": filename,
                "file_sha256": sha,
                "size": 1000 + package_id,
                "created_at": (created + timedelta(minutes=5)).isoformat(),
            }
            for filename, sha in files
        ]
        return package_id

    async def listing(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        assert (params["order_by"], params["sort"], params["per_page"]) == (
            "created_at",
            "desc",
            "100",
        )
        needle = params["package_name"]
        items = [p for p in self.packages if needle in p["name"]]
        items.sort(key=lambda p: (p["created_at"], p["id"]), reverse=True)
        number = int(params["page"])
        self.listed_pages.append(number)
        await asyncio.sleep(0)
        last = max(1, -(-len(items) // 100))
        headers = {"X-Next-Page": str(number + 1) if number < last else ""}
        if len(items) <= self.counted:
            headers |= {"X-Total": str(len(items)), "X-Total-Pages": str(last)}
        return httpx.Response(200, json=items[(number - 1) * 100 : number * 100], headers=headers)

    def package_files(self, request: httpx.Request, package_id: str) -> httpx.Response:
        self.files_asked.append(int(package_id))
        entries = self.files.get(int(package_id))
        if entries is None:
            return httpx.Response(404, json={"message": "404 Not found"})
        return httpx.Response(200, json=entries, headers={"X-Next-Page": "", "X-Total-Pages": "1"})

    def mock(self, page_links: list[str], name: str = "x") -> respx.Route:
        respx.get(f"{BASE}/packages").mock(side_effect=self.listing)
        respx.get(url__regex=rf"{BASE}/packages/(?P<package_id>\d+)/package_files").mock(
            side_effect=self.package_files
        )
        return respx.get(f"{BASE}/packages/pypi/simple/{name}").respond(200, text=page(*page_links))


def _versions(registry: Registry, name: str, count: int, first: datetime = T0) -> list[str]:
    """`count` versions of `name`, one an hour; their page links, oldest first."""
    links = []
    for n in range(count):
        filename = f"{name.replace('-', '_')}-1.{n}-py3-none-any.whl"
        registry.add(name, f"1.{n}", first + timedelta(hours=n), (filename, _sha(n + 1)))
        links.append(_link(filename, _sha(n + 1)))
    return links


@respx.mock
async def test_a_page_without_files_never_asks_the_packages_api(client) -> None:
    async def far_away(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # GitLab's latency: a request sent beside the page goes out
        return httpx.Response(302, headers={"Location": "https://pypi.org/simple/requests/"})

    respx.get(f"{BASE}/packages/pypi/simple/requests").mock(side_effect=far_away)
    listing = respx.get(f"{BASE}/packages").respond(200, json=[])
    assert await _source(client).project_page("requests") is None
    assert not listing.called


@respx.mock
async def test_times_from_the_listing_now_exact_details_in_the_background(client) -> None:
    registry = Registry()
    links = _versions(registry, "x", 2)
    registry.add("x-extra", "9.0", T0 + timedelta(days=9))  # the substring match: filtered out
    registry.mock(links)
    changes = []

    async def changed(name: str) -> None:
        changes.append(name)

    source = _source(client, changed=changed)
    cold = await source.project_page("x")
    assert cold is not None
    # the page waited for the listing only: each version's creation time, no size yet
    assert [(f.size, f.upload_time) for f in cold.files] == [
        (None, T0),
        (None, T0 + timedelta(hours=1)),
    ]
    await source.details.settled()
    assert sorted(registry.files_asked) == [100, 101]  # one call per version, never x-extra's
    assert set(changes) == {"x"}  # x's rendered pages are told to refresh, no others
    refined = await with_details(source, cold)
    assert [(f.size, f.upload_time) for f in refined.files] == [
        (1100, T0 + timedelta(minutes=5)),
        (1101, T0 + timedelta(hours=1, minutes=5)),
    ]
    assert await with_details(source, refined) is refined  # all exact: nothing read


@respx.mock
async def test_listing_pages_after_the_first_are_asked_at_once_and_no_more(client) -> None:
    registry = Registry()
    links = _versions(registry, "big", 250)
    registry.mock(links, "big")
    both_asked, arrived = asyncio.Event(), set()
    listing = registry.listing

    async def concurrently(request: httpx.Request) -> httpx.Response:
        arrived.add(request.url.params["page"])
        if request.url.params["page"] != "1":
            if {"2", "3"} <= arrived:
                both_asked.set()
            await asyncio.wait_for(both_asked.wait(), 5)  # page 2 waits for page 3: at once
        return await listing(request)

    registry.listing = concurrently
    registry.mock(links, "big")
    source = _source(client)
    result = await source.project_page("big")
    assert result is not None
    assert sorted(registry.listed_pages) == [1, 2, 3]
    assert all(f.upload_time is not None for f in result.files)
    await source.details.settled()
    assert len(registry.files_asked) == 250  # in the background, one per version


@respx.mock
async def test_a_short_name_in_a_long_listing_is_bounded_on_the_clients_time(client) -> None:
    registry = Registry(counted=100)  # no totals: GitLab stops counting
    links = _versions(registry, "core", 3)
    for n in range(1000):  # ten pages of newer packages whose names contain "core"
        registry.add(f"core-plugin-{n}", "1.0", T0 + timedelta(days=1, minutes=n))
    registry.mock(links, "core")
    source = _source(client)
    result = await source.project_page("core")
    assert result is not None
    # 1 page, then what 3 versions need (1) and the slack (2): not the whole listing
    assert sorted(registry.listed_pages) == [1, 2, 3, 4]
    assert [f.upload_time for f in result.files] == [None, None, None]
    await source.details.settled()  # the background reads on, one page at a time
    assert sorted(registry.listed_pages) == list(range(1, 12))
    assert registry.listed_pages[4:] == list(range(5, 12))
    refined = await with_details(source, result)
    assert [f.size for f in refined.files] == [1100, 1101, 1102]


@respx.mock
async def test_exact_details_are_kept_for_good_on_disk(client, tmp_path: Path) -> None:
    registry = Registry()
    links = _versions(registry, "x", 3)
    simple = registry.mock(links)
    first = _source(client, DetailsStore(tmp_path))
    await first.project_page("x")
    await first.details.settled()
    asked = (len(registry.listed_pages), len(registry.files_asked))
    # another worker, or the proxy after a restart: the page alone, details exact at once
    second = _source(client, DetailsStore(tmp_path))
    result = await second.project_page("x")
    assert result is not None and all(f.size for f in result.files)
    await second.details.settled()
    assert (len(registry.listed_pages), len(registry.files_asked)) == asked
    assert simple.call_count == 2


@respx.mock
async def test_a_file_added_to_an_old_version_is_asked_for_that_version_only(client) -> None:
    registry = Registry()
    links = _versions(registry, "x", 2)
    simple = registry.mock(links)
    source = _source(client)
    await source.project_page("x")
    await source.details.settled()
    assert sorted(registry.files_asked) == [100, 101]
    wheel = ("x-1.1-cp312-cp312-manylinux_2_17_x86_64.whl", _sha(99))
    registry.files[101].append(
        {**registry.files[101][0], "file_name": wheel[0], "file_sha256": _sha(99)}
    )
    simple.respond(200, text=page(*links, _link(*wheel)))
    listed = len(registry.listed_pages)
    result = await source.project_page("x")
    assert result is not None
    added = next(f for f in result.files if f.filename == wheel[0])
    assert (added.size, added.upload_time) == (None, T0 + timedelta(hours=1))  # its version's
    await source.details.settled()
    assert len(registry.listed_pages) == listed  # its version was known: no listing
    assert sorted(registry.files_asked) == [100, 101, 101]
    refined = await with_details(source, result)
    assert all(f.size for f in refined.files)


@respx.mock
async def test_a_version_the_listing_lacks_is_not_sought_on_every_fetch(client) -> None:
    registry = Registry()
    links = _versions(registry, "x", 1)
    hidden = _link("x-2.0-py3-none-any.whl", _sha(50))  # listed on the page, not by the API
    registry.mock([*links, hidden])
    source = _source(client)
    for _ in range(3):
        result = await source.project_page("x")
        await source.details.settled()
    assert result is not None
    assert registry.listed_pages == [1]
    assert [f.upload_time is None for f in result.files] == [False, True]


@pytest.mark.parametrize(("status", "asked"), [(500, 2), (403, 1)])
@respx.mock
async def test_packages_api_failure_still_serves_the_page(client, status: int, asked: int) -> None:
    respx.get(f"{BASE}/packages/pypi/simple/x").respond(
        200, text=page(_link("x-1.0.tar.gz", _sha(1)))
    )
    listing = respx.get(f"{BASE}/packages").respond(status)
    source = _source(client)
    for _ in range(2):
        result = await source.project_page("x")
        assert result is not None
        assert [(f.filename, f.size, f.upload_time) for f in result.files] == [
            ("x-1.0.tar.gz", None, None)
        ]
        await source.details.settled()
    # an outage is asked about again with the next page; a refusal (no read_api) not for a while
    assert listing.call_count == asked
    source.details._refused_until = 0.0  # that while (10 minutes) has passed
    await source.project_page("x")
    assert listing.call_count == asked + 1


@respx.mock
async def test_configured_yanked_versions_are_marked(client, tmp_path: Path) -> None:
    respx.get(f"{BASE}/packages/pypi/simple/x").respond(
        200, text=page(_link("x-1.0.tar.gz", _sha(1)), _link("x-1.1.tar.gz", _sha(2)))
    )
    respx.get(f"{BASE}/packages").respond(200, json=[], headers={"X-Next-Page": ""})
    config = SourceConfig(
        "platform", "gitlab_project", "acme/platform", yanked={"x": frozenset({"1.1"})}
    )
    gitlab = GitLabConfig(url="http://gitlab.internal:8080", token="t", timeout=2)
    source = GitLabProject(config, gitlab, Upstream(client))
    index = composed(tmp_path, [source], yanked={"platform": config.yanked}).index
    result = await index.project_page("x")
    assert result is not None
    assert {f.filename: f.yanked for f in result.files} == {
        "x-1.0.tar.gz": False,
        "x-1.1.tar.gz": True,
    }
