"""A GitLab project's root index kept as a hint: a name it lists has its page and the Packages API
listing asked at once (one round trip); any other name is asked as before; the root index is what
the shared poll for new names read (tests/unit/test_name_poll.py), and a poll that fails changes
nothing for clients."""

import asyncio
import io
from datetime import timedelta

import httpx
import httpx2
import pytest
import respx

from gitlab_pypi_proxy.errors import Refused, SourceUnavailable
from gitlab_pypi_proxy.sources.gitlab_root_index import RootIndex
from tests.unit.test_gitlab_file_details import BASE, T0, Registry, _source, _versions
from tests.unit.test_gitlab_source import page

ROOT = f"{BASE}/packages/pypi/simple"
HOLD = 5.0  # seconds an answer is held waiting for the other request: a deadline, not a timing


def _root_index(*names: str) -> respx.Route:
    links = [f'<a href="{ROOT}/{n}">{n}</a>' for n in names]
    return respx.get(ROOT).respond(200, text=page(*links))


async def _started(source) -> None:
    """A serving worker's root index, as the poll for new names read it (if it could)."""
    try:
        seen, _ = await source.poll(None)
    except (Refused, SourceUnavailable):
        return
    source.saw(seen)


def _ordered(registry: Registry, name: str, links: list[str], events: list[str]) -> None:
    """Mock `name`'s page and the listing, recording when each is asked and answered."""
    listing = registry.listing

    async def listed(request: httpx.Request) -> httpx.Response:
        events.append("listing asked")
        return await listing(request)

    async def simple(request: httpx.Request) -> httpx.Response:
        events.append("page asked")
        await asyncio.sleep(0.02)  # GitLab's latency: a request sent beside the page goes out
        events.append("page answered")
        return httpx.Response(200, text=page(*links))

    registry.listing = listed
    registry.mock(links, name)
    respx.get(f"{BASE}/packages/pypi/simple/{name}").mock(side_effect=simple)


@respx.mock
async def test_a_name_in_the_root_index_asks_its_page_and_listing_at_once(client) -> None:
    registry = Registry()
    links = _versions(registry, "x", 2)
    listing_asked = asyncio.Event()
    listing = registry.listing

    async def listed(request: httpx.Request) -> httpx.Response:
        listing_asked.set()
        return await listing(request)

    async def held(request: httpx.Request) -> httpx.Response:
        # the page answers only once the listing was asked: both are out before either answers
        await asyncio.wait_for(listing_asked.wait(), HOLD)
        return httpx.Response(200, text=page(*links))

    registry.listing = listed
    registry.mock(links)
    respx.get(f"{BASE}/packages/pypi/simple/x").mock(side_effect=held)
    _root_index("x", "other")
    source = _source(client)
    await _started(source)
    result = await source.project_page("x")
    assert result is not None
    assert [f.upload_time for f in result.files] == [T0, T0 + timedelta(hours=1)]
    assert registry.listed_pages == [1]  # the early page is the one read, not asked twice


@respx.mock
async def test_a_name_the_root_index_does_not_list_asks_the_listing_after_its_page(client) -> None:
    registry = Registry()
    links = _versions(registry, "x", 1)
    events: list[str] = []
    _ordered(registry, "x", links, events)
    _root_index("other")
    source = _source(client)
    await _started(source)
    result = await source.project_page("x")
    assert result is not None and result.files[0].upload_time == T0
    assert events == ["page asked", "page answered", "listing asked"]


@respx.mock
async def test_a_public_name_never_asks_the_packages_api_with_the_root_index_known(client) -> None:
    async def far_away(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # GitLab's latency: a request sent beside the page goes out
        return httpx.Response(302, headers={"Location": "https://pypi.org/simple/requests/"})

    respx.get(f"{BASE}/packages/pypi/simple/requests").mock(side_effect=far_away)
    listing = respx.get(f"{BASE}/packages").respond(200, json=[])
    _root_index("x")
    source = _source(client)
    await _started(source)
    assert await source.project_page("requests") is None
    await source.details.settled()
    assert not listing.called


@respx.mock
async def test_a_listing_asked_early_for_a_page_without_files_is_dropped(client) -> None:
    respx.get(f"{BASE}/packages/pypi/simple/gone").respond(404)
    listing = respx.get(f"{BASE}/packages").respond(200, json=[])
    _root_index("gone")  # listed, then deleted before its page was asked
    source = _source(client)
    await _started(source)
    assert await source.project_page("gone") is None
    await source.details.settled()
    assert listing.call_count <= 1  # asked beside the page at most, never after it


@respx.mock
async def test_a_revalidated_page_is_one_round_trip_even_when_listed(client) -> None:
    registry = Registry()
    links = _versions(registry, "x", 2)
    simple = registry.mock(links)
    _root_index("x")
    source = _source(client)
    await _started(source)
    assert await source.project_page("x") is not None
    await source.details.settled()
    assert registry.listed_pages == [1]
    again = await source.project_page("x")  # the page's TTL has passed: asked again
    await source.details.settled()
    assert simple.call_count == 2
    assert registry.listed_pages == [1]  # its package ids are kept: the page alone
    assert again is not None and all(f.upload_time is not None for f in again.files)


def test_a_new_read_keeps_the_names_uploaded_through_this_worker() -> None:
    index = RootIndex()
    assert not index.lists("a")  # not read yet: every name asked as before
    index.update(frozenset({"a"}))
    index.add("new-tool")
    index.update(frozenset({"a", "b"}))  # read before the upload landed
    assert index.lists("a") and index.lists("b") and index.lists("new-tool")
    index.update(frozenset({"b"}))
    assert not index.lists("a")


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500), httpx.Response(404), httpx2.ConnectError("refused")],
    ids=["500", "404 (GitLab before 15.1)", "unreachable"],
)
@respx.mock
async def test_a_failing_root_index_changes_nothing_for_clients(client, failure) -> None:
    registry = Registry()
    links = _versions(registry, "x", 1)
    events: list[str] = []
    _ordered(registry, "x", links, events)
    root = respx.get(ROOT).mock(side_effect=[failure])
    source = _source(client)
    await _started(source)
    result = await source.project_page("x")
    assert result is not None and result.files[0].upload_time == T0
    assert events == ["page asked", "page answered", "listing asked"]  # as without one
    assert root.call_count == 1  # polled again after its interval, not with every page


@respx.mock
async def test_an_upload_through_the_proxy_adds_its_name(client) -> None:
    upload = respx.post(f"{BASE}/packages/pypi").mock(
        side_effect=[httpx.Response(400, json={"message": "400 Bad request"}), httpx.Response(201)]
    )
    source = _source(client)
    auth = httpx2.BasicAuth("u", "tok")
    refused = await source.upload({"name": "Acme_Tool"}, "a.tar.gz", io.BytesIO(b"x"), 1, auth)
    assert refused.status == 400 and not source.root_index.lists("acme-tool")
    await source.upload({"name": "Acme_Tool"}, "a.tar.gz", io.BytesIO(b"x"), 1, auth)
    assert upload.call_count == 2
    assert source.root_index.lists("acme-tool")  # normalized, as pages are asked
