"""What one upstream request may spend, against the hostile index on loopback: a page must arrive
whole within the timeout and within `max_page_size` (declared, chunked or gzip-decoded), a file
must keep arriving, and a source's requests wait for its own share of connections only."""

import gzip
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import ConfigError, load
from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.sources.upstream import CHUNK, Upstream, make_client, make_upstream
from gitlab_pypi_proxy.sources.upstream_bounds import Bounds
from tests.hostile_index import HTML, JSON, HostileIndex, Reply, drip, hostile_index, repeated

MiB = 2**20


class Heard:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, bool]] = []

    def request_done(self, source, status, reason="", *, timeout=False, upstream=""):  # type: ignore[no-untyped-def]
        self.calls.append((source, status, timeout))

    def pool_stalled(self, pool, reason):  # type: ignore[no-untyped-def]
        pass


@pytest.fixture(scope="module")
def index() -> Iterator[HostileIndex]:
    with hostile_index() as (index, _):
        yield index


async def test_a_dripping_page_stops_at_the_deadline(index: HostileIndex) -> None:
    # one byte every 0.1 s: each read is quick, the whole takes 3 s
    index.on(
        "/simple/drip/",
        Reply(headers=[("content-type", HTML)], body=drip(b"<a>x</a>" * 4), pace=0.1),
    )
    heard = Heard()
    upstream = make_upstream(0.5, heard)
    try:
        with pytest.raises(SourceUnavailable) as caught:
            await upstream.get("public", f"{index.url}/simple/drip/")
    finally:
        await upstream.aclose()
    assert caught.value.status == 504
    host = index.url.removeprefix("http://")
    assert caught.value.reason == f"{host} did not answer in full within 0.5s ([gitlab] timeout)"
    assert heard.calls[-1] == ("public", None, True)  # the source is reported down: timed out


@pytest.mark.parametrize(
    "reply",
    [
        Reply(headers=[("content-length", str(3 * MiB))], body=repeated(b"<a>x</a>", 3 * MiB)),
        Reply(body=repeated(b"<a>x</a>", 3 * MiB)),  # chunked: no length said
        Reply(
            headers=[("content-encoding", "gzip")],
            body=gzip.compress(b"<a>x</a>" * (MiB // 2)),  # 4 MiB decoded, 10 KiB sent
        ),
    ],
    ids=["declared", "chunked", "gzip"],
)
async def test_a_page_over_max_page_size_is_refused(index: HostileIndex, reply: Reply) -> None:
    index.on("/simple/huge/", reply)
    upstream = make_upstream(5.0, max_page_size=MiB)
    try:
        with pytest.raises(SourceUnavailable) as caught:
            await upstream.get("public", f"{index.url}/simple/huge/")
    finally:
        await upstream.aclose()
    assert caught.value.status == 502
    assert caught.value.reason.endswith("sent a page larger than [cache] max_page_size (1.0 MiB)")


async def test_a_compressed_page_under_the_limit_is_read_decoded(index: HostileIndex) -> None:
    document = {"meta": {"api-version": "1.1"}, "name": "demo", "files": [], "pad": "x" * 500_000}
    index.on(
        "/simple/demo/",
        Reply(
            headers=[("content-type", JSON), ("content-encoding", "gzip")],
            body=gzip.compress(json.dumps(document).encode()),
        ),
    )
    upstream = make_upstream(5.0, max_page_size=MiB)
    try:
        response = await upstream.get("public", f"{index.url}/simple/demo/")
    finally:
        await upstream.aclose()
    assert response.json() == document
    assert response.headers["content-type"] == JSON
    assert "content-encoding" not in response.headers
    assert str(response.url) == f"{index.url}/simple/demo/"


async def _body(upstream: Upstream, url: str, source: str = "public") -> bytes:
    async with upstream.stream(source, url) as response:
        return b"".join([chunk async for chunk in upstream.chunks(source, response)])


async def test_a_dripping_file_is_cut_a_flowing_one_is_not(index: HostileIndex) -> None:
    index.on("/f/drip.whl", Reply(body=drip(b"x" * 40), pace=0.05))  # 2 s for 40 bytes
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    index.on("/f/whole.whl", Reply(body=repeated(data, len(data), 64 * 1024)))
    heard = Heard()
    upstream = make_upstream(0.5, heard)
    try:
        with pytest.raises(SourceUnavailable) as caught:
            await _body(upstream, f"{index.url}/f/drip.whl")
        assert await _body(upstream, f"{index.url}/f/whole.whl") == data
    finally:
        await upstream.aclose()
    host = index.url.removeprefix("http://")
    assert caught.value.status == 504
    assert (
        caught.value.reason == f"{host} sent under 64.0 KiB of the file in 0.5s ([gitlab] timeout)"
    )


async def test_a_slow_source_holds_its_own_connections_only(index: HostileIndex) -> None:
    index.on("/slow.whl", Reply(body=drip(b"x" * 100), pace=0.2))
    index.on("/simple/fast/", Reply(headers=[("content-type", HTML)], body=b"<a>fast</a>"))
    # two sources with two connections each, in a pool of four
    upstream = Upstream(make_client(1.0, connections=4), bounds=Bounds(1.0, MiB, per_source=2))
    try:
        async with AsyncExitStack() as held:
            for _ in range(2):
                await held.enter_async_context(upstream.stream("slow", f"{index.url}/slow.whl"))
            with pytest.raises(SourceUnavailable) as caught:
                await _body(upstream, f"{index.url}/slow.whl", "slow")
            fast = await upstream.get("fast", f"{index.url}/simple/fast/")
    finally:
        await upstream.aclose()
    assert caught.value.status == 504
    assert caught.value.reason.startswith("all 2 connections of this source are busy")
    assert fast.text == "<a>fast</a>"


def test_max_page_size_is_a_size_of_at_least_a_mebibyte(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text('[cache]\nmax_page_size = "16MiB"\n')
    assert load(path).cache.max_page_size == 16 * MiB
    path.write_text("[cache]\n")
    assert load(path).cache.max_page_size == 64 * MiB
    for value, problem in [('"1KiB"', "must be at least 1048576 bytes"), ('"lots"', "not a size")]:
        path.write_text(f"[cache]\nmax_page_size = {value}\n")
        with pytest.raises(ConfigError, match=f"cache.max_page_size: {problem}"):
            load(path)
