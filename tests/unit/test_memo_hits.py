"""The memo-hit layer answers exactly what the route answers, and only what it is sure of."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.routing import Route

from gitlab_pypi_proxy.auth import Identity
from gitlab_pypi_proxy.errors import ProxyError
from gitlab_pypi_proxy.http import error_responses
from gitlab_pypi_proxy.http.access_log import AccessLog
from gitlab_pypi_proxy.http.app import project_page, simple_root
from gitlab_pypi_proxy.http.memo_hits import MemoHits
from gitlab_pypi_proxy.http.page_memo import PageMemo
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.asgi import asgi_client
from tests.unit.fakes import NO_POLL, FakeSource
from tests.unit.indexes import composed

JSON = "application/vnd.pypi.simple.v1+json"
# Enough files for a page worth a gzip copy.
FILES = [(f"x-1.{n}.tar.gz", f"{n:064x}") for n in range(40)]


class Apps:
    """The routes alone, and the same routes behind the memo-hit layer, sharing one memo."""

    def __init__(self, tmp_path: Path) -> None:
        source = FakeSource("platform")
        for filename, sha256 in FILES:
            source.add("x", filename, sha256)
        other = FakeSource("other")  # one file name of platform's, other bytes
        other.add("x", FILES[0][0], "f" * 64)
        self.source = source
        self.stores = Stores.local(tmp_path, 2**30)
        views = {"mine": ["platform"], "other-first": ["other", "platform"]}
        self.built = composed(tmp_path, [source, other], stores=self.stores, views=views)
        self.routes = Starlette(
            routes=[
                Route("/simple/", simple_root, methods=["GET", "HEAD"]),
                Route("/simple/{name}/", project_page, methods=["GET", "HEAD"]),
                Route("/simple/{name}", project_page, methods=["GET", "HEAD"]),
                Route("/{view}/simple/{name}/", project_page, methods=["GET", "HEAD"]),
            ],
            exception_handlers={ProxyError: error_responses.handle},
        )
        self.routes.state.services = SimpleNamespace(composed=self.built, name_poll=NO_POLL)
        self.routes.state.memo = PageMemo(self.stores.coordinator)
        self.passed_on = 0  # requests the memo-hit layer handed to the routes
        self.identity: Identity | None = None

        async def inner(scope: dict, receive: Any, send: Any) -> None:
            self.passed_on += 1
            await self.routes(scope, receive, send)

        hits = MemoHits(inner, root=simple_root, page=project_page)

        async def fast(scope: dict, receive: Any, send: Any) -> None:
            scope["app"] = self.routes  # as Starlette sets it, outside its middleware
            if self.identity is not None:
                scope["identity"] = self.identity  # as gitlab_pypi_proxy.http.access leaves it
            await hits(scope, receive, send)

        self.fast = AccessLog(fast)

    async def close(self) -> None:
        await self.built.close()


def _answer(response: httpx2.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body, but the request's id (the access log layer puts it on)."""
    headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"x-request-id"]
    return response.status_code, headers, response.content


def _requests(client: httpx2.AsyncClient, etag: str) -> list[Any]:
    return [
        lambda: client.get("/simple/x/"),
        lambda: client.get("/simple/x/", headers={"Accept": JSON}),
        lambda: client.get("/simple/x/", headers={"Accept-Encoding": "gzip"}),
        lambda: client.head("/simple/x/"),
        lambda: client.get("/simple/x/", headers={"If-None-Match": etag}),
        lambda: client.get("/simple/"),
    ]


def _route_count(route: str) -> float:
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "gitlab_pypi_proxy_http_requests_total" and (
                sample.labels.get("route") == route
            ):
                total += sample.value
    return total


async def test_a_memo_hit_is_answered_before_the_router_exactly_as_the_route_answers(
    tmp_path: Path,
) -> None:
    apps = Apps(tmp_path)
    async with (
        asgi_client(apps.routes, "127.0.0.1") as plain,
        asgi_client(apps.fast, "127.0.0.1") as fast,
    ):
        first = await plain.get("/simple/x/")
        etag = first.headers["etag"]
        for ask in _requests(plain, etag):  # every variant into the memo, through the route
            await ask()
        pages = apps.source.page_calls
        counted = _route_count("project_page")
        for ask_plain, ask_fast in zip(_requests(plain, etag), _requests(fast, etag), strict=True):
            by_route, by_layer = await ask_plain(), await ask_fast()
            assert _answer(by_layer) == _answer(by_route)
            assert by_layer.headers.get_list("x-request-id") != []
        assert apps.passed_on == 0  # every one answered by the layer
        assert apps.source.page_calls == pages  # from the memo, as the route's were
        # the access log and the metrics name the route the layer stood in for
        assert _route_count("project_page") - counted == 5
        statuses = {(await ask()).status_code for ask in _requests(fast, etag)}
        assert statuses == {200, 304}
        gzipped = await fast.get("/simple/x/", headers={"Accept-Encoding": "gzip"})
        assert gzipped.headers["content-encoding"] == "gzip"
    await apps.close()


async def test_what_the_layer_is_unsure_of_goes_to_the_route(tmp_path: Path) -> None:
    apps = Apps(tmp_path)
    async with asgi_client(apps.fast, "127.0.0.1") as fast:
        assert (await fast.get("/simple/x/")).status_code == 200  # a miss: the route
        assert apps.passed_on == 1
        assert (await fast.get("/simple/x/")).status_code == 200  # a hit
        assert apps.passed_on == 1
        passed_on = [
            fast.get("/simple/X/"),  # not the normal form: the route redirects
            fast.get("/simple/x"),  # no slash: the route redirects
            fast.get("/simple/x/?format=json"),  # a query: the route parses it
            fast.get("/simple/x/", headers={"Accept": "image/png"}),  # the route's 406
        ]
        statuses = []
        for request in passed_on:
            statuses.append((await request).status_code)
        assert statuses == [301, 301, 200, 406]
        assert apps.passed_on == 5
        await apps.stores.coordinator.changed()  # another worker changed a record
        assert (await fast.get("/simple/x/")).status_code == 200
        assert apps.passed_on == 6
        # a reader of fewer sources never gets a page rendered for a reader of all of them
        apps.identity = Identity("alice", frozenset({"platform"}), frozenset(), None)
        assert (await fast.get("/simple/x/")).status_code == 200
        assert apps.passed_on == 7
    await apps.close()


async def test_a_view_has_memo_hits_of_its_own(tmp_path: Path) -> None:
    apps = Apps(tmp_path)
    async with asgi_client(apps.fast, "127.0.0.1") as fast:
        pages = {}
        for path in ("/simple/x/", "/other-first/simple/x/", "/mine/simple/x/"):
            pages[path] = (await fast.get(path, headers={"Accept": JSON})).json()
        assert apps.passed_on == 3  # three misses: a view's page is not the root's
        first = next(f["hashes"]["sha256"] for f in pages["/other-first/simple/x/"]["files"])
        assert first == "f" * 64  # in this view, other wins the file name
        assert next(f["hashes"]["sha256"] for f in pages["/simple/x/"]["files"]) == FILES[0][1]
        assert pages["/mine/simple/x/"]["files"] == pages["/simple/x/"]["files"]
        for path, page in pages.items():
            assert (await fast.get(path, headers={"Accept": JSON})).json() == page
        assert apps.passed_on == 3  # each a hit of its own
        # a reader of none of a view's sources is the route's to refuse
        apps.identity = Identity("alice", frozenset({"other"}), frozenset(), None)
        refused = await fast.get("/mine/simple/x/")
        assert (refused.status_code, apps.passed_on) == (403, 4)
    await apps.close()
