"""What the metrics count: evictions, single-flight joins, uploads, page cache lookups."""

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import httpx2
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.routing import Route

from gitlab_pypi_proxy.auth import Identity
from gitlab_pypi_proxy.config import AuthConfig, UploadConfig
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.errors import ProxyError
from gitlab_pypi_proxy.http import error_responses
from gitlab_pypi_proxy.http.app import project_page
from gitlab_pypi_proxy.http.page_memo import PageMemo
from gitlab_pypi_proxy.http.upload import upload
from gitlab_pypi_proxy.sources.base import UploadAnswer
from gitlab_pypi_proxy.storage.stores import Stores
from gitlab_pypi_proxy.storage.uploads import RecentUploads
from tests.unit.asgi import asgi_client
from tests.unit.fakes import NO_POLL, FakeSource
from tests.unit.indexes import composed
from tests.unit.test_file_store import opener, read_all


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value("gitlab_pypi_proxy_" + name, labels) or 0.0


async def test_evictions_and_single_flight_joins_are_counted(tmp_path: Path) -> None:
    contents = [os.urandom(300_000) for _ in range(4)]
    source = FakeSource("s", contents={hashlib.sha256(c).hexdigest(): c for c in contents})
    store = Stores.local(tmp_path, 700_000)  # room for two of the four
    evictions, joins = (
        _sample("cache_evictions_total"),
        _sample("single_flight_joins_total", cache="file"),
    )
    for content in contents:
        sha = hashlib.sha256(content).hexdigest()
        first = store.downloads.download(sha, opener(source, sha))
        assert (
            store.downloads.download(sha, opener(source, sha)) is first
        )  # joins the running download
        await read_all(first)
    kept = store.blobs.stats().entries
    assert _sample("cache_evictions_total") - evictions == len(contents) - kept > 0
    assert _sample("single_flight_joins_total", cache="file") - joins == len(contents)
    store.close()


def _samples(name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


class Accepting:
    """A GitLab project that stores whatever it is sent."""

    async def upload(self, fields, filename, file, size, auth) -> UploadAnswer:  # type: ignore[no-untyped-def]
        return UploadAnswer(201, "201 Created")


async def test_an_upload_is_counted_once(tmp_path: Path) -> None:
    """A stored upload was counted twice: by the route (its status) and by the upload list."""
    uploads = RecentUploads(tmp_path)
    forgotten: list[str] = []

    async def uploaded(name: str) -> None:
        forgotten.append(name)

    services = SimpleNamespace(
        config=SimpleNamespace(upload=UploadConfig(default_source="platform"), auth=AuthConfig()),
        upload_target=lambda name: Accepting() if name == "platform" else None,
        uploads=uploads,
        uploaded=uploaded,
        audit=None,
    )
    routes = Starlette(
        routes=[Route("/upload/", upload, methods=["POST"])],
        exception_handlers={ProxyError: error_responses.handle},
    )
    routes.state.services = services

    async def app(scope: dict, receive: object, send: object) -> None:  # as access control does
        scope["identity"] = Identity(
            "ci", None, frozenset({"platform"}), httpx2.BasicAuth("a", "b")
        )
        await routes(scope, receive, send)

    before = _samples("gitlab_pypi_proxy_uploads_total", source="platform")
    filename, data = make_wheel("acme-tool", "1.0")
    async with asgi_client(app, "127.0.0.1") as client:
        answer = await client.post(
            "/upload/",
            data={"name": "acme-tool", "version": "1.0", ":action": "file_upload"},
            files={"content": (filename, data)},
        )
    assert (answer.status_code, answer.text) == (201, f"uploaded {filename} to platform\n")
    assert forgotten == ["acme-tool"]
    assert _samples("gitlab_pypi_proxy_uploads_total", source="platform") - before == 1
    uploads.close()


async def test_page_hits_are_counted_per_source_lookup_not_per_memo_hit(tmp_path: Path) -> None:
    """The route counted a page hit for each page answered from this worker's memo, and the
    cache one per source record read: both fed the status page's one ratio."""
    first, second = FakeSource("platform"), FakeSource("acme")
    first.add("x", "x-1.0.tar.gz", "a" * 64)
    second.add("x", "x-2.0.tar.gz", "b" * 64)
    stores = Stores.local(tmp_path, 2**30)
    built = composed(tmp_path, [first, second], stores=stores)
    app = Starlette(
        routes=[Route("/simple/{name}/", project_page)],
        exception_handlers={ProxyError: error_responses.handle},
    )
    app.state.services = SimpleNamespace(composed=built, name_poll=NO_POLL)
    app.state.memo = PageMemo(stores.coordinator)

    def lookups() -> tuple[float, float]:
        return (
            _samples("gitlab_pypi_proxy_cache_lookups_total", cache="page", outcome="hit"),
            _samples("gitlab_pypi_proxy_cache_lookups_total", cache="page", outcome="miss"),
        )

    hits, misses = lookups()
    async with asgi_client(app, "127.0.0.1") as client:
        assert (await client.get("/simple/x/")).status_code == 200  # both sources asked
        assert (await client.get("/simple/x/")).status_code == 200  # this worker's memo
        await stores.coordinator.changed()  # another worker stored something: memo out of date
        assert (await client.get("/simple/x/")).status_code == 200  # both records, fresh
    assert (lookups()[0] - hits, lookups()[1] - misses) == (2, 2)
    await built.close()
