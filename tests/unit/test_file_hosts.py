"""A `url` source's files come only from its index's own origin and its `file_hosts`: a page (or a
redirect) pointing anywhere else is refused before anything is sent there, for the file, its
HEAD, its ranged reads and its sidecars; the public index's CDN is allowed by default."""

import hashlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
from prometheus_client import REGISTRY

from gitlab_pypi_proxy.cli import _describe
from gitlab_pypi_proxy.config import ConfigError, SourceConfig, load
from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.model import DistFile
from gitlab_pypi_proxy.sources.file_hosts import FileHosts
from gitlab_pypi_proxy.sources.simple_index import SimpleIndexSource
from gitlab_pypi_proxy.sources.upstream import Upstream, make_upstream
from tests.hostile_index import HostileIndex, Reply, hostile_index

SECRET = b"internal service: do not relay"
META = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
RULE = "a url source's files are fetched only from its index's own origin"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[HostileIndex, HostileIndex]]:
    """The index, and an internal service on another loopback port."""
    with hostile_index() as (index, _), hostile_index() as (internal, _):
        internal.on("/secret.whl", Reply(body=SECRET))
        internal.on("/secret.whl.metadata", Reply(body=META))
        yield index, internal


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    upstream = make_upstream(5.0)
    yield upstream
    await upstream.aclose()


def _port(server: HostileIndex) -> int:
    return int(server.url.rpartition(":")[2])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(url: str, **extra: object) -> dict[str, object]:
    return {
        "filename": "demo-1.0-py3-none-any.whl",
        "url": url,
        "hashes": {"sha256": hashlib.sha256(SECRET).hexdigest()},
        "core-metadata": {"sha256": hashlib.sha256(META).hexdigest()},
        **extra,
    }


async def _files(index: HostileIndex, upstream: Upstream, *hosts: str) -> list[DistFile]:
    config = SourceConfig("public", "url", f"{index.url}/simple/", file_hosts=hosts)
    page = await SimpleIndexSource(config, upstream).project_page("demo")
    assert page is not None
    return list(page.files)


async def _download_refused(source: SimpleIndexSource, file: DistFile) -> str:
    with pytest.raises(SourceUnavailable) as caught:
        async with source.open_file(file):
            pass
    assert caught.value.status == 502
    return caught.value.reason


async def _every_fetch_refused(source: SimpleIndexSource, file: DistFile) -> list[str]:
    """The reason of each way a file is fetched: GET, HEAD (its size), a ranged read, the
    PEP 658 sidecar and the provenance; each must be refused."""
    reasons = [await _download_refused(source, file)]
    attempts = [
        lambda: source.file_head(file),
        lambda: source.range_reader(file, background=True)("bytes=-100"),
        lambda: source.core_metadata(file),
        lambda: source.provenance(file),
    ]
    for attempt in attempts:
        with pytest.raises(SourceUnavailable) as caught:
            await attempt()
        reasons.append(caught.value.reason)
    return reasons


async def test_a_file_on_another_port_is_refused_before_any_request(servers, upstream) -> None:
    index, internal = servers
    closed = _closed_port()
    index.json_page(
        "demo",
        [
            _entry(f"{internal.url}/secret.whl", provenance=f"{internal.url}/secret.whl"),
            _entry(f"http://127.0.0.1:{closed}/secret.whl"),
        ],
    )
    internal.asked.clear()
    config = SourceConfig("public", "url", f"{index.url}/simple/")
    source = SimpleIndexSource(config, upstream)
    page = await source.project_page("demo")
    assert page is not None
    open_port, closed_port = page.files
    reasons = await _every_fetch_refused(source, open_port)
    assert all(RULE in r and f"127.0.0.1:{_port(internal)}" in r for r in reasons), reasons
    closed_reason = await _download_refused(source, closed_port)
    # an open and a closed port are told apart by nothing but their number
    assert closed_reason == reasons[0].replace(str(_port(internal)), str(closed))
    assert internal.asked == []


async def test_a_same_origin_redirect_elsewhere_is_refused_at_that_hop(servers, upstream) -> None:
    index, internal = servers
    index.json_page("demo", [_entry("/p/demo-1.0-py3-none-any.whl")])
    index.redirect("/p/demo-1.0-py3-none-any.whl", f"{internal.url}/secret.whl")
    internal.asked.clear()
    index.asked.clear()
    config = SourceConfig("public", "url", f"{index.url}/simple/")
    source = SimpleIndexSource(config, upstream)
    (file,) = (await source.project_page("demo")).files  # type: ignore[union-attr]
    labels = {"source": "public", "bound": "file_hosts"}
    before = REGISTRY.get_sample_value("gitlab_pypi_proxy_upstream_stopped_total", labels) or 0
    reason = await _download_refused(source, file)
    after = REGISTRY.get_sample_value("gitlab_pypi_proxy_upstream_stopped_total", labels)
    assert after == before + 1
    assert reason.startswith(f"refused a redirect to 127.0.0.1:{_port(internal)}: ")
    assert RULE in reason
    assert index.paths() == ["/simple/demo/", "/p/demo-1.0-py3-none-any.whl"]
    assert internal.asked == []


async def test_listed_file_hosts_are_fetched_without_the_index_credentials(
    servers, upstream
) -> None:
    index, internal = servers
    index.json_page("demo", [_entry("/p/demo-1.0-py3-none-any.whl")])
    index.redirect("/p/demo-1.0-py3-none-any.whl", f"{internal.url}/secret.whl")
    index.redirect("/p/demo-1.0-py3-none-any.whl.metadata", f"{internal.url}/secret.whl.metadata")
    internal.asked.clear()
    config = SourceConfig(
        "public",
        "url",
        f"{index.url}/simple/",
        username="reader",
        password="s3cret",
        file_hosts=(f"127.0.0.1:{_port(internal)}",),
    )
    source = SimpleIndexSource(config, upstream)
    (file,) = (await source.project_page("demo")).files  # type: ignore[union-attr]
    async with source.open_file(file) as stream:
        body = b"".join([chunk async for chunk in stream.chunks])
    assert body == SECRET
    assert await source.core_metadata(file) == META
    assert [a.path for a in internal.asked] == ["/secret.whl", "/secret.whl.metadata"]
    assert all("authorization" not in a.headers for a in internal.asked)


def test_a_host_without_a_port_allows_its_standard_port_only() -> None:
    rule = FileHosts("public", "https://mirror.example.org/simple/", ("files.example.net",))
    allowed = [
        "https://mirror.example.org/p/x.whl",
        "https://mirror.example.org:443/p/x.whl",
        "https://files.example.net/x.whl",
        "http://FILES.example.net/x.whl",
    ]
    refused = [
        "http://mirror.example.org/p/x.whl",  # the index's host, another scheme: another origin
        "https://mirror.example.org:8443/p/x.whl",
        "https://files.example.net:8080/x.whl",
        "https://127.0.0.1/x.whl",
        "https://files.example.net.evil.example/x.whl",
    ]
    assert [rule.allows(httpx2.URL(u)) for u in allowed] == [True] * len(allowed)
    assert [rule.allows(httpx2.URL(u)) for u in refused] == [False] * len(refused)
    with_port = FileHosts("public", "https://mirror.example.org/simple/", ("[::1]:8080",))
    assert with_port.allows(httpx2.URL("http://[::1]:8080/x.whl"))
    assert not with_port.allows(httpx2.URL("http://[::1]/x.whl"))


def _config(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text('[gitlab]\nurl = "https://gitlab.example.com"\n[[sources]]\n' + source)
    return path


def test_the_public_index_keeps_its_files_on_its_cdn_by_default(tmp_path: Path) -> None:
    public = load(_config(tmp_path, 'name = "public"\nurl = "https://pypi.org/simple/"\n'))
    assert public.sources[0].file_hosts == ("files.pythonhosted.org",)
    described = _describe(public)  # check-config shows what applies
    assert "url https://pypi.org/simple/ (files also from files.pythonhosted.org)" in described
    assert "pages up to 64.0 MiB" in described
    mirror = load(_config(tmp_path, 'name = "m"\nurl = "https://mirror.example.org/simple"\n'))
    assert mirror.sources[0].file_hosts == ()
    listed = load(
        _config(
            tmp_path,
            'name = "m"\nurl = "https://pypi.org/simple/"\n'
            'file_hosts = ["CDN.example.net", "files.example.net:8443"]\n',
        )
    )
    assert listed.sources[0].file_hosts == ("cdn.example.net", "files.example.net:8443")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            'name = "p"\ngitlab_project = 1\nfile_hosts = ["x.example"]\n',
            "sources[0].file_hosts: only on a url source",
        ),
        (
            'name = "m"\nurl = "https://m.example/simple/"\nfile_hosts = ["https://x.example/"]\n',
            "sources[0].file_hosts: expected host names such as",
        ),
        (
            'name = "m"\nurl = "https://m.example/simple/"\nfile_hosts = ["x.example:99999"]\n',
            "sources[0].file_hosts: expected host names such as",
        ),
        (
            'name = "m"\nurl = "https://m.example/simple/"\nfile_hosts = "x.example"\n',
            "sources[0].file_hosts: expected a list of strings",
        ),
    ],
)
def test_file_hosts_errors_name_the_key(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(_config(tmp_path, source))
