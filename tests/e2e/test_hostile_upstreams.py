"""The proxy behind a hostile `url` source, end to end (one proxy process for the module): a page
that sends the proxy elsewhere (another port, its own /metrics, a GitLab endpoint, a redirect
there) gets a 502 naming the rule and nothing reaches there; a huge page is refused in bounded
memory; hundreds of dripping names neither take a healthy GitLab source's connections nor make it
look down, and leave no connection held; a cookie an upstream sets is never sent back."""

import asyncio
import hashlib
import itertools
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import psutil
import pytest

from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.hostile_index import HTML, JSON, HostileIndex, Reply, drip, hostile_index, repeated
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import Server, serve
from tests.waiting import wait_until
from tests.worlds import app_with_dependency

TOKEN = "glpat-hostile-reader"
TIMEOUT = 3  # [gitlab] timeout: a page's deadline, the wait for a connection
MiB = 2**20
SECRET = b"internal service: do not relay"
RULE = "a url source's files are fetched only from its index's own origin"


@dataclass
class World:
    proxy: ProxyProcess
    double: GitLabDouble
    gitlab: Server
    index: HostileIndex  # the `public` url source
    internal: HostileIndex  # a service on another loopback port


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    double = app_with_dependency(TOKEN)
    with (
        serve(double.app) as gitlab,
        hostile_index() as (index, _),
        hostile_index() as (internal, _),
    ):
        sources = [
            {"name": "platform", "gitlab_project": 11},
            {"name": "public", "url": f"{index.url}/simple/"},
        ]
        config = write_config(
            tmp_path_factory.mktemp("hostile"),
            gitlab.url,
            sources,
            token=TOKEN,
            gitlab={"timeout": TIMEOUT, "max_requests_per_minute": 100_000},
            cache={"max_page_size": "8MiB"},
        )
        proxy = start_proxy(config)
        try:
            yield World(proxy, double, gitlab, index, internal)
        finally:
            proxy.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(proxy: ProxyProcess) -> psutil.Process:
    """The process that serves (the supervisor's one worker)."""
    main = psutil.Process(proxy.process.pid)
    return (main.children() or [main])[0]


def _kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:", 1)[1].split()[0])


def test_a_page_sending_the_proxy_elsewhere_gets_502s_and_nothing_gets_there(
    world: World,
) -> None:
    proxy, index, internal = world.proxy, world.index, world.internal
    internal.on("/secret.whl", Reply(body=SECRET))
    gitlab_endpoint = "/api/v4/projects/11/packages/pypi/simple/app-main"
    elsewhere = [
        f"{internal.url}/secret.whl",
        f"{proxy.url}/metrics",
        f"{world.gitlab.url}{gitlab_endpoint}",
        f"http://127.0.0.1:{_closed_port()}/secret.whl",
        "/p/redirected.whl",  # the index's own origin, answering 302 to the internal service
    ]
    index.redirect("/p/redirected.whl", f"{internal.url}/secret.whl")
    entries = [
        {
            "filename": f"ssrf-1.{n}-py3-none-any.whl",
            "url": url,
            "hashes": {"sha256": hashlib.sha256(b"%d" % n).hexdigest()},
            "core-metadata": {"sha256": hashlib.sha256(b"m%d" % n).hexdigest()},
        }
        for n, url in enumerate(elsewhere)
    ]
    index.json_page("ssrf", entries)
    gitlab_asked = world.double.count("GET", gitlab_endpoint)

    page = httpx2.get(f"{proxy.url}/simple/ssrf/", headers={"Accept": JSON}, timeout=30)
    assert page.status_code == 200, page.text
    files = [f"{proxy.url}/simple/ssrf/{f['url']}" for f in page.json()["files"]]
    assert len(files) == len(elsewhere)
    for url in files:
        # the page's files are remembered in the background: a 404 until then
        got = wait_until(
            lambda url=url: (r := httpx2.get(url, timeout=30)).status_code != 404 and r,
            f"an answer for {url}",
        )
        assert got.status_code == 502, got.text
        assert RULE in got.text and "file_hosts" in got.text
        assert httpx2.head(url, timeout=30).status_code == 502
        assert httpx2.get(f"{url}.metadata", timeout=30).status_code != 200
    assert internal.asked == []
    assert world.double.count("GET", gitlab_endpoint) == gitlab_asked
    assert '"GET /metrics"' not in proxy.log()


def test_a_page_over_max_page_size_is_a_502_in_bounded_memory(world: World) -> None:
    head = b'{"meta": {"api-version": "1.1"}, "name": "huge", "files": [], "pad": "'
    body = lambda: itertools.chain([head], repeated(b"x", 100 * MiB)(), [b'"}'])  # noqa: E731
    world.index.on("/simple/huge/", Reply(headers=[("content-type", JSON)], body=body))
    worker = _worker(world.proxy).pid
    Path(f"/proc/{worker}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _kib(worker, "VmRSS")
    answer = httpx2.get(f"{world.proxy.url}/simple/huge/", timeout=120)
    peak = _kib(worker, "VmHWM")
    assert answer.status_code == 502, answer.text
    assert "sent a page larger than [cache] max_page_size (8.0 MiB)" in answer.text
    assert peak - before < 48 * 1024, f"peak RSS {peak} KiB, {before} KiB before"


async def _impatient(port: int, path: str, patience: float) -> None:
    """One client: send the request, give up after `patience` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(reader.read(), patience)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


def _sockets_to(proxy: ProxyProcess, port: int) -> int:
    """TCP sockets the proxy's processes hold to `port`."""
    main = psutil.Process(proxy.process.pid)
    held = 0
    for process in [main, *main.children(recursive=True)]:
        try:
            held += sum(
                1 for c in process.net_connections("tcp") if c.raddr and c.raddr.port == port
            )
        except psutil.NoSuchProcess:
            continue
    return held


def test_dripping_names_leave_a_healthy_source_its_connections(world: World) -> None:
    proxy, index = world.proxy, world.index
    names = [f"drip-{n}" for n in range(210)]  # more than the whole pool of 200
    for name in names:  # a byte every half second: 50 s for the page
        index.on(
            f"/simple/{name}/",
            Reply(headers=[("content-type", HTML)], body=drip(b"<a>" * 33), pace=0.5),
        )
    port = int(proxy.url.rsplit(":", 1)[1])

    async def burst() -> None:
        await asyncio.gather(*(_impatient(port, f"/simple/{n}/", 1.0) for n in names))

    asyncio.run(burst())  # every client has given up; the fetches they started go on
    cold = httpx2.get(f"{proxy.url}/simple/app-main/", timeout=30)
    assert cold.status_code == 200, cold.text
    assert "app_main-1.0-py3-none-any.whl" in cold.text
    sources = httpx2.get(f"{proxy.url}/readyz", timeout=30).json()["sources"]
    assert sources["platform"]["state"] == "up", sources
    hostile_port = int(index.url.rsplit(":", 1)[1])
    wait_until(
        lambda: _sockets_to(proxy, hostile_port) == 0,
        "the proxy to let go of the dripping connections",
    )


def test_a_cookie_an_upstream_sets_is_never_sent_back(world: World) -> None:
    proxy, index = world.proxy, world.index
    cookie = [("set-cookie", "session=s3cret; Path=/"), ("content-type", HTML)]
    index.on("/simple/cookie-setter/", Reply(headers=cookie, body=b"<a>x</a>"))
    assert httpx2.get(f"{proxy.url}/simple/cookie-setter/", timeout=30).status_code == 200
    seen = len(index.asked), len(world.double.requests)
    httpx2.get(f"{proxy.url}/simple/cookie-later/", timeout=30)
    httpx2.get(f"{proxy.url}/simple/app-dep/", timeout=30)
    later = [a.headers for a in index.asked[seen[0] :]]
    later += [r.headers for r in world.double.requests[seen[1] :]]
    assert len(later) >= 2 and all("cookie" not in headers for headers in later)
