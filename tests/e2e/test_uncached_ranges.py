"""Byte ranges of files the proxy has not cached: a 206 of exactly those bytes, asked of the
reader's own source as a range (uv reads a wheel's metadata so when no PEP 658 sidecar is
offered), or read from a download under way of a source the reader may read, or, from an
upstream that sends whole files, from the download of the whole; a HEAD says Accept-Ranges when
the source serves ranges. uv resolving through the proxy reads ranges, never whole wheels.

One proxy over the GitLab double (which serves ranges and offers no PEP 658 sidecar) and over a
`url` source whose files are sent whole whatever the Range (tests/hostile_index.py)."""

import hashlib
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import isolated_env, run, uv_binary
from tests.hostile_index import HostileIndex, Reply, hostile_index
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until

Answer = httpx2.Response
TOKEN = "glpat-ranges"
PAD = 200 * 1024  # past the proxy's own look-ahead, which keeps wheels of one tail read whole
HELD = 256 * 1024  # what the proxy reads of an upstream's body at once (sources/upstream.py)
USERS = """
[auth]
anonymous_read = false

[[users]]
name = "all"
password = "all-password"

[[users]]
name = "other-reader"
password = "other-password"
read = ["other"]
"""
ALL = ("all", "all-password")
OTHER = ("other-reader", "other-password")
# what uv resolves: a small tree of wheels, each too large to be read whole by one tail read
TREE = {
    "rtop": ["rmid-a", "rmid-b"],
    "rmid-a": ["rleaf"],
    "rmid-b": ["rleaf"],
    "rleaf": [],
}


@dataclass
class World:
    gitlab: GitLabDouble
    index: HostileIndex
    proxy: ProxyProcess
    wheels: dict[str, tuple[str, bytes]]

    def url(self, name: str) -> str:
        filename, data = self.wheels[name]
        return f"{self.proxy.url}/files/{hashlib.sha256(data).hexdigest()}/{filename}"

    def get(self, name: str, ranged: str | None = None, auth: tuple[str, str] = ALL) -> Answer:
        headers = {"Range": ranged} if ranged else None
        return httpx2.get(self.url(name), headers=headers, auth=auth, timeout=30)

    def asked(self, name: str) -> list[str | None]:
        """The Range header of each GET of `name`'s wheel that reached GitLab (None: whole)."""
        filename = self.wheels[name][0]
        return [
            r.headers.get("range")
            for r in self.gitlab.requests
            if r.method == "GET" and r.path.endswith(f"/{filename}")
        ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    gitlab = GitLabDouble()
    gitlab.add_project(11, "acme/platform")
    gitlab.add_project(12, "acme/other")
    gitlab.add_token(TOKEN, read={11, 12})
    wheels = {}
    for name in ("plain", "held", "both", *TREE):
        pad = 2 * HELD if name in ("held", "both") else PAD
        wheels[name] = make_wheel(name, "1.0", requires_dist=TREE.get(name), pad_bytes=pad)
        gitlab.add_package_file(11, name, "1.0", *wheels[name])
    gitlab.add_package_file(12, "both", "1.0", *wheels["both"])
    for name in ("whole", "longer"):
        wheels[name] = make_wheel(name, "1.0", pad_bytes=PAD)
    directory = tmp_path_factory.mktemp("ranges")
    with serve(gitlab.app) as server, hostile_index() as (index, _):
        for name in ("whole", "longer"):
            filename, data = wheels[name]
            digest = hashlib.sha256(data).hexdigest()
            entry = {
                "filename": filename,
                "url": f"/files/{filename}",
                "hashes": {"sha256": digest},
            }
            index.json_page(name, [entry])
        # an upstream that sends the whole file whatever the Range, and says nothing of ranges
        filename, data = wheels["whole"]
        index.on(f"/files/{filename}", Reply(200, [("content-length", str(len(data)))], data))
        # one that says it sends the first 100 bytes, and sends 200
        filename, data = wheels["longer"]
        said = [("content-range", f"bytes 0-99/{len(data)}"), ("accept-ranges", "bytes")]
        index.on(f"/files/{filename}", Reply(206, said, data[:200]))
        sources = [
            {"name": "platform", "gitlab_project": 11},
            {"name": "other", "gitlab_project": 12},
            {"name": "public", "url": f"{index.url}/simple/"},
        ]
        config = write_config(directory, server.url, sources, token=TOKEN, extra=USERS)
        proxy = start_proxy(config)
        try:
            yield World(gitlab, index, proxy, wheels)
        finally:
            proxy.stop()
    assert "Traceback" not in proxy.log(), proxy.log()


def test_a_range_of_an_uncached_file_is_exactly_those_bytes_asked_as_a_range(
    world: World,
) -> None:
    data = world.wheels["plain"][1]
    size = len(data)
    head = httpx2.head(world.url("plain"), auth=ALL, timeout=30)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(size)
    assert head.headers["accept-ranges"] == "bytes"
    tail = world.get("plain", "bytes=-100")
    assert tail.status_code == 206 and tail.content == data[-100:]
    assert tail.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    assert tail.headers["content-length"] == "100"
    middle = world.get("plain", "bytes=1000-1999")
    assert middle.status_code == 206 and middle.content == data[1000:2000]
    past = world.get("plain", f"bytes={size}-")
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    # GitLab was asked for each range, never for the whole file, and nothing was cached
    assert world.asked("plain") == [f"bytes={size - 100}-{size - 1}", "bytes=1000-1999"]
    again = world.get("plain", "bytes=0-9")
    assert again.status_code == 206 and again.headers["x-cache"] == "MISS"


def _listed(world: World, name: str) -> None:
    """Ask for `name`'s page: a `url` source's file is found through it."""
    assert httpx2.get(f"{world.proxy.url}/simple/{name}/", auth=ALL, timeout=30).status_code == 200


def test_an_upstream_that_sends_whole_files_gives_the_range_from_its_download(
    world: World,
) -> None:
    data = world.wheels["whole"][1]
    size = len(data)
    _listed(world, "whole")
    head = httpx2.head(world.url("whole"), auth=ALL, timeout=30)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)
    assert "accept-ranges" not in head.headers  # uv streams the wheel instead
    answer = world.get("whole", "bytes=-100")
    assert answer.status_code == 206 and answer.content == data[-100:]
    assert answer.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    cached = world.get("whole", "bytes=0-99")  # that download was kept: the cache's range
    assert cached.status_code == 206 and cached.content == data[:100]
    assert cached.headers["x-cache"] == "HIT"


def test_an_upstream_that_sends_more_than_its_range_has_the_body_cut(world: World) -> None:
    _listed(world, "longer")
    with pytest.raises(httpx2.RemoteProtocolError):  # fewer bytes than announced: not a range
        world.get("longer", "bytes=0-99")


def _stream(url: str, got: list[bytes]) -> None:
    """GET `url` whole (in a thread), noting each chunk as it arrives."""
    with httpx2.stream("GET", url, auth=ALL, timeout=60) as response:
        for chunk in response.iter_bytes():
            got.append(chunk)


def _follow_held(world: World, name: str) -> tuple[threading.Event, threading.Thread]:
    """A whole download of `name` through the proxy, held by GitLab after HELD bytes, all but
    the last of them written to the proxy's spool: its client has received them."""
    release = world.gitlab.hold(world.wheels[name][0], after=HELD)
    got: list[bytes] = []
    reader = threading.Thread(target=_stream, args=(world.url(name), got))
    reader.start()
    # the proxy holds back the last byte it has until the whole is verified
    wait_until(lambda: sum(map(len, got)) >= HELD - 1, "the held download to be followed", 30)
    return release, reader


def test_a_range_of_a_download_under_way_is_read_from_it(world: World) -> None:
    data = world.wheels["held"][1]
    release, reader = _follow_held(world, "held")
    try:
        answer = httpx2.get(
            world.url("held"), headers={"Range": "bytes=100-4195"}, auth=ALL, timeout=30
        )
        assert answer.status_code == 206 and answer.content == data[100:4196]
        assert world.asked("held") == [None]  # the one download, no range asked of GitLab
    finally:
        release.set()
        reader.join(60)


def test_a_reader_never_gets_a_range_of_a_download_from_a_source_it_may_not_read(
    world: World,
) -> None:
    data = world.wheels["both"][1]
    release, reader = _follow_held(world, "both")  # from platform (11)
    try:
        answer = world.get("both", "bytes=0-99", auth=OTHER)
        assert answer.status_code == 206 and answer.content == data[:100]
        other = [
            r.headers.get("range")
            for r in world.gitlab.requests
            if r.path.startswith("/api/v4/projects/12/") and "/files/" in r.path
        ]
        assert other == ["bytes=0-99"]  # its own source's range
    finally:
        release.set()
        reader.join(60)


def test_uv_resolves_through_the_proxy_by_ranges(world: World, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.in"
    requirements.write_text("rtop\n")
    command = [uv_binary(), "pip", "compile", "-v", "--python", sys.executable, "--no-header"]
    index = world.proxy.url.replace("http://", "http://all:all-password@") + "/simple/"
    command += ["--index-url", index, str(requirements)]
    done = run(command, isolated_env(tmp_path / "home"))
    assert done.returncode == 0, done.stderr
    assert {"rtop==1.0", "rmid-a==1.0", "rmid-b==1.0", "rleaf==1.0"} <= set(done.stdout.split())
    assert "Range requests not supported" not in done.stderr
    for name in TREE:  # GitLab sent ranges of each wheel, never a whole one
        asked = world.asked(name)
        assert asked and None not in asked, (name, asked)
