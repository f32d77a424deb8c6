"""Core metadata service: advertised once stored, obtained after a download, pages enriched."""

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx2
import respx

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.index.wheel_metadata import TAIL
from gitlab_pypi_proxy.services import Composed
from gitlab_pypi_proxy.sources.base import Parts
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.simple_index import SimpleIndexSource
from gitlab_pypi_proxy.sources.upstream import Upstream
from gitlab_pypi_proxy.storage.stores import Stores
from tests.servers import serve
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed


async def test_metadata_is_advertised_only_after_it_is_stored(tmp_path: Path) -> None:
    filename, data = make_wheel("demo", "1.0", requires_dist=["dep"])
    sha = hashlib.sha256(data).hexdigest()
    source = FakeSource("platform")
    source.add("demo", filename, sha, data)
    files = Stores.local(tmp_path, 2**30)
    built = composed(tmp_path, [source], stores=files)
    index, service = built.plain, built.metadata
    first = await service.annotated(await index.project_page("demo"))
    assert first.files[0].core_metadata_sha256 is None
    await service.tasks.settled()  # the background try: not cached, no ranges
    assert (await service.annotated(await index.project_page("demo"))).files[
        0
    ].core_metadata_sha256 is None

    generation = files.coordinator.generation("demo")
    enrichment = files.coordinator.enrichment("demo")
    download = files.downloads.download(sha, built.files.opener([source.file_for(sha, filename)]))
    service.after_download(download, sha, filename)
    await download.wait()
    await service.tasks.settled()
    # rendered pages are still right: served while rendered again (gitlab_pypi_proxy.http.page_memo)
    assert files.coordinator.generation("demo") == generation
    assert files.coordinator.enrichment("demo") != enrichment

    page = await service.annotated(await index.project_page("demo"))
    body = await service.sidecar(sha, filename, None)
    assert body is not None and b"Requires-Dist: dep" in body
    assert page.files[0].core_metadata_sha256 == hashlib.sha256(body).hexdigest()
    assert await service.sidecar("0" * 64, "other-1.0-py3-none-any.whl", None) is None


@respx.mock
async def test_a_public_sidecar_is_fetched_verified_and_kept(tmp_path: Path) -> None:
    body = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n"
    digest = hashlib.sha256(body).hexdigest()
    wheel = "https://files.example.net/demo-1.0-py3-none-any.whl"
    respx.get("https://index.example.org/simple/demo/").respond(
        200,
        text=f'<a href="{wheel}#sha256={"a" * 64}" data-core-metadata="sha256={digest}">x</a>',
        headers={"content-type": "text/html"},
    )
    sidecar = respx.get(wheel + ".metadata").respond(200, content=body)
    async with httpx2.AsyncClient() as http:
        client = Upstream(http)
        config = SourceConfig(
            "public", "url", "https://index.example.org/simple/", file_hosts=("files.example.net",)
        )
        public = SimpleIndexSource(config, client)
        built = composed(tmp_path, [], [Parts(public, sidecars=public)])
        index, service = built.plain, built.metadata
        page = await service.annotated(await index.project_page("demo"))
        assert page.files[0].core_metadata_sha256 == digest  # the upstream's own claim
        assert not service.tasks  # nothing to seek in the background
        filename = "demo-1.0-py3-none-any.whl"
        assert await service.sidecar("a" * 64, filename, None) == body
        assert await service.sidecar("a" * 64, filename, None) == body
    assert sidecar.call_count == 1


async def test_the_warm_up_reads_gitlab_wheels_through_the_budget_in_the_background(
    tmp_path: Path,
) -> None:
    """The older versions' wheels at background priority; the newest's, which the client is
    about to download, at a client's (it may join that read)."""
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    filename, data = make_wheel("demo", "1.0")
    double.add_package_file(11, "demo", "1.0", filename, data)
    newest, _ = make_wheel("demo", "2.0")
    double.add_package_file(11, "demo", "2.0", newest, _)
    with serve(double.app) as gitlab:
        async with httpx2.AsyncClient() as http:
            client = Upstream(http)
            config = SourceConfig("platform", "gitlab_project", "11")
            source = GitLabProject(config, GitLabConfig(url=gitlab.url, timeout=5), client)
            streamed: list[tuple[str, bool]] = []
            budgeted = source.api.stream

            def recording(url: str, *, headers=None, method="GET", background: bool = False):
                streamed.append((url.rsplit("/", 1)[1], background))
                return budgeted(url, headers=headers, method=method, background=background)

            source.api.stream = recording  # type: ignore[method-assign]
            built = composed(tmp_path, [source])
            index, service = built.plain, built.metadata
            await service.annotated(await index.project_page("demo"))
            await service.tasks.settled()
            await source.details.settled()
            assert set(streamed) == {(filename, True), (newest, False)}
            key = ("platform", hashlib.sha256(data).hexdigest())
            assert await service.store.digests([key], "demo")
            await built.close()


def _gitlab_source(gitlab_url: str, http: httpx2.AsyncClient) -> GitLabProject:
    config = SourceConfig("platform", "gitlab_project", "11")
    return GitLabProject(config, GitLabConfig(url=gitlab_url, timeout=5), Upstream(http))


def _file_reads(double: GitLabDouble, filename: str) -> list[str]:
    """The Range header of each request for `filename` (empty: the whole file)."""
    return [r.headers.get("range", "") for r in double.requests if r.path.endswith(filename)]


@asynccontextmanager
async def _page_looked_at(tmp_path: Path, double: GitLabDouble) -> AsyncIterator[Composed]:
    """The index over project 11 of `double`, once the page of `demo` was served and the
    metadata work it started has ended."""
    with serve(double.app) as gitlab:
        async with httpx2.AsyncClient() as http:
            stores = Stores.local(tmp_path, 2**30)
            built = composed(tmp_path, [_gitlab_source(gitlab.url, http)], stores=stores)
            await built.metadata.annotated(await built.plain.project_page("demo"))
            await built.metadata.tasks.settled()
            try:
                yield built
            finally:
                await built.close()


async def test_a_small_wheel_is_kept_whole_by_its_one_metadata_read(tmp_path: Path) -> None:
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    filename, data = make_wheel("demo", "1.0")
    sha = hashlib.sha256(data).hexdigest()
    double.add_package_file(11, "demo", "1.0", filename, data)
    async with _page_looked_at(tmp_path, double) as built:
        assert await built.metadata.blobs.open(sha, count=False) is not None  # kept: a hit next
        assert await built.metadata.store.digests([("platform", sha)], "demo")
        assert _file_reads(double, filename) == [f"bytes=-{TAIL}"]


async def test_a_larger_wheel_declines_and_its_metadata_goes_on_from_the_tail(
    tmp_path: Path,
) -> None:
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    filename, data = make_wheel("demo", "1.0", pad_bytes=4 * TAIL)
    sha = hashlib.sha256(data).hexdigest()
    double.add_package_file(11, "demo", "1.0", filename, data)
    async with _page_looked_at(tmp_path, double) as built:
        assert await built.metadata.blobs.open(sha, count=False) is None  # never whole
        body = await built.metadata.store.get("platform", sha)
        assert body is not None and b"Name: demo" in body
        reads = _file_reads(double, filename)
        assert reads[0] == f"bytes=-{TAIL}" and reads.count(f"bytes=-{TAIL}") == 1
        assert all(r.startswith("bytes=") for r in reads)  # ranges only, never the whole


async def test_no_look_ahead_when_the_newest_version_has_a_wheel_per_platform(
    tmp_path: Path,
) -> None:
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    shas = []
    for tag in ("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-win_amd64"):
        name, data = make_wheel("demo", "1.0")
        name = name.replace("py3-none-any", tag)
        double.add_package_file(11, "demo", "1.0", name, data + tag.encode())
        shas.append(hashlib.sha256(data + tag.encode()).hexdigest())
    async with _page_looked_at(tmp_path, double) as built:
        for sha in shas:  # which one a client wants is not known: neither is fetched whole
            assert await built.metadata.blobs.open(sha, count=False) is None


async def test_the_newest_wheel_held_by_the_policy_is_not_read(tmp_path: Path) -> None:
    source = FakeSource("platform")
    old_name, old = make_wheel("demo", "1.0")
    new_name, new = make_wheel("demo", "2.0")
    source.add("demo", old_name, hashlib.sha256(old).hexdigest(), old)
    held = source.add("demo", new_name, hashlib.sha256(new).hexdigest(), new)
    source.pages["demo"][-1] = replace(held, yanked="held by [policy] min_age")
    stores = Stores.local(tmp_path, 2**30)
    built = composed(tmp_path, [source], stores=stores)
    await built.metadata.annotated(await built.plain.project_page("demo"))
    await built.metadata.tasks.settled()
    assert source.ranged == [old_name]  # the older one was tried; the held one never
    assert source.file_calls == 0
    await built.close()
