"""End to end, what an untrusted upstream makes the proxy parse: wheels whose METADATA is a
decompression bomb (on a public index and uploaded to GitLab), malformed pages, provenance whose
publisher names hold CR/LF, NUL and non-ASCII, and a big page. One proxy process (restarted once)
over the GitLab double and the hostile index; memory read from /proc, never timings."""

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zipfile import ZIP_BZIP2, ZIP_DEFLATED

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests import zip_bombs
from tests.hostile_index import JSON, HostileIndex, Reply, hostile_index
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.sigstore_double import SigstoreDouble
from tests.waiting import wait_until

ACCEPT_JSON = {"Accept": JSON}
MiB = 2**20


@dataclass
class World:
    proxy: ProxyProcess
    double: GitLabDouble
    index: HostileIndex
    config: Path
    env: dict[str, str]


def _status(pid: int, field: str) -> int:
    """A VmRSS/VmHWM figure of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def _reset_peak(pid: int) -> int:
    """Start the peak RSS over from now; the RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def _entry(filename: str, data: bytes, **fields: object) -> dict[str, object]:
    sha256 = hashlib.sha256(data).hexdigest()
    return {
        "filename": filename,
        "url": f"/files/{filename}",
        "hashes": {"sha256": sha256},
        **fields,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path = tmp_path_factory.mktemp("untrusted")
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    for version, method in [("1.0", ZIP_DEFLATED), ("1.1", ZIP_BZIP2)]:  # the newest: cached
        double.add_package_file(11, "gl-bomb", version, *zip_bombs.bomb("gl_bomb", version, method))
    double.add_package_file(11, "calm", "1.0", *make_wheel("calm", "1.0"))
    with serve(double.app) as gitlab, hostile_index() as (index, _):
        entries = []
        for version, method in [("1.0", ZIP_DEFLATED), ("1.1", ZIP_BZIP2)]:
            filename, data = zip_bombs.bomb("pub_bomb", version, method)
            index.file(f"/files/{filename}", data)
            entries.append(_entry(filename, data))
        index.json_page("pub-bomb", entries)
        sources = [
            {"name": "platform", "gitlab_project": 11},
            {"name": "hostile", "url": f"{index.url}/simple/"},
        ]
        config = write_config(tmp_path, gitlab.url, sources)
        env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}  # sigstore's trust root cache
        running = World(start_proxy(config, env=env), double, index, config, env)
        try:
            yield running
        finally:
            running.proxy.stop()


def _page(world: World, name: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.get(f"{world.proxy.url}/simple/{name}/", headers=headers, timeout=60)


def test_metadata_bombs_cost_no_memory_and_advertise_nothing(world: World) -> None:
    pid = world.proxy.process.pid
    assert _page(world, "calm", ACCEPT_JSON).status_code == 200
    wait_until(
        lambda: "core-metadata" in _page(world, "calm", ACCEPT_JSON).json()["files"][0],
        "a harmless wheel's metadata (the worker warmed up)",
    )
    before = _reset_peak(pid)
    for name in ("gl-bomb", "pub-bomb"):
        assert _page(world, name, ACCEPT_JSON).status_code == 200
    bombs = [f"{n}_bomb-{v}-py3-none-any.whl" for n in ("gl", "pub") for v in ("1.0", "1.1")]
    refused = [f"no core metadata for {wheel}: " for wheel in bombs]
    wait_until(lambda: all(line in world.proxy.log() for line in refused), "every bomb refused")
    # four bombs of 64 MiB each, read at once: the worker grew by no more than a few MiB
    assert _status(pid, "VmHWM") - before < 32 * MiB
    log = world.proxy.log()
    assert [log.count(line) for line in refused] == [1, 1, 1, 1]
    assert "decompresses past the 1000 bytes its directory declares" in log
    for name in ("gl-bomb", "pub-bomb"):
        files = _page(world, name, ACCEPT_JSON).json()["files"]
        assert len(files) == 2 and not any("core-metadata" in f for f in files)
        assert "data-core-metadata" not in _page(world, name).text


def test_malformed_pages_are_left_out_or_the_sources_502_never_a_500(world: World) -> None:
    _, good = make_wheel("pub-types", "1.0")
    world.index.json_page(
        "pub-types",
        [
            _entry("pub_types-1.0-py3-none-any.whl", good, **{"requires-python": ">=3.8"}),
            _entry("pub_types-1.1.tar.gz", b"x", **{"requires-python": {"a": 1}}),
            _entry("pub_types-1.2.tar.gz", b"y", yanked="gone\r\nX-Injected: 1\x00"),
            "x",
        ],
    )
    world.index.on(
        "/simple/pub-deep/",
        Reply(headers=[("content-type", JSON)], body=b"[" * 100_000 + b"]" * 100_000),
    )
    for accept in (ACCEPT_JSON, {"Accept": "text/html"}):
        kept = _page(world, "pub-types", accept)
        assert kept.status_code == 200
        assert "pub_types-1.0-py3-none-any.whl" in kept.text
        assert "pub_types-1.1.tar.gz" not in kept.text
        assert "gone X-Injected: 1" in kept.text and "\x00" not in kept.text
        deep = _page(world, "pub-deep", accept)
        assert deep.status_code == 502
        assert "upstream hostile unavailable: unreadable page of pub-deep" in deep.text
        assert "JSON nested too deeply" in deep.text
    log = world.proxy.log()
    assert "source hostile: page pub-types: 2 malformed entries left out" in log
    assert "upstream hostile unavailable: unreadable page of pub-deep: JSON nested" in log


def _provenance(filename: str, sha256: str) -> bytes:
    """A provenance object whose publisher names are hostile text (not verifiable)."""
    attestation = SigstoreDouble().attestation(filename, sha256, "release@acme.example")
    publisher = {
        "kind": "GitHub",
        "repository": "evil/repo\r\nX-Injected: 1\x00 caf\u00e9",
        "workflow": "release.yml" + "w" * 5000,
    }
    bundle = {"publisher": publisher, "attestations": [attestation]}
    return json.dumps({"version": 1, "attestation_bundles": [bundle]}).encode()


def test_provenance_with_hostile_publisher_names_is_served_with_a_safe_header(
    world: World,
) -> None:
    filename, data = make_wheel("attested", "1.0")
    sha256 = hashlib.sha256(data).hexdigest()
    world.index.on(f"/provenance/{filename}", Reply(body=_provenance(filename, sha256)))
    world.index.json_page(
        "attested", [_entry(filename, data, provenance=f"/provenance/{filename}")]
    )
    assert _page(world, "attested", ACCEPT_JSON).status_code == 200
    url = f"/files/{sha256}/{filename}.provenance"

    def served() -> str:
        answer = httpx2.get(world.proxy.url + url, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.headers["x-provenance"]

    header = served()
    assert header.startswith("not verified: GitHub evil/repo X-Injected: 1 caf\\xe9 (release.yml")
    assert header.isascii() and header.isprintable() and len(header) <= 1024
    world.proxy.stop()
    world.proxy = start_proxy(world.config, env=world.env)  # kept as it was: served again
    assert served() == header
    assert world.index.paths().count(f"/provenance/{filename}") == 1
    lines = world.proxy.log().splitlines()
    assert not [line for line in lines if line.startswith("X-Injected") or "\x00" in line]


def test_a_big_page_leaves_healthz_answering_and_memory_bounded(world: World) -> None:
    count = 5_000
    for name in ("warm", "big"):
        entries = [
            _entry(f"{name}-1.{n}.tar.gz", n.to_bytes(4, "big"), **{"requires-python": ">=3.8"})
            for n in range(count)
        ]
        body = json.dumps({"meta": {}, "name": name, "files": entries}).encode()
        world.index.on(f"/simple/{name}/", Reply(headers=[("content-type", JSON)], body=body))
    assert _page(world, "warm", ACCEPT_JSON).status_code == 200  # what any first page costs
    pid = world.proxy.process.pid
    before = _reset_peak(pid)
    answers: list[httpx2.Response] = []
    page = threading.Thread(target=lambda: answers.append(_page(world, "big", ACCEPT_JSON)))
    page.start()
    try:
        wait_until(lambda: "/simple/big/" in world.index.paths(), "the page asked upstream")

        def healthz_meanwhile() -> bool:
            answered = httpx2.get(f"{world.proxy.url}/healthz", timeout=60).status_code == 200
            return answered and page.is_alive()

        wait_until(healthz_meanwhile, "/healthz answering while the page is worked on", 60)
    finally:
        page.join(timeout=120)
    (answer,) = answers
    assert answer.status_code == 200 and len(answer.json()["files"]) == count
    # the page's text, its files, its rendering: a small multiple of the page, past what any
    # request's work costs (threads' stacks and buffers: measured 10 MiB for a 1 MB page)
    assert _status(pid, "VmHWM") - before < 8 * len(body) + 16 * 2**20
