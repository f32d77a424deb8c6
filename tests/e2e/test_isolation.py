"""One team's bytes never reach another: cached bytes go only to a reader one of whose sources has
delivered them (downloaded and verified by the proxy), whatever digest a listing claims.

GitLab stores the `sha256_digest` an upload sends without hashing the bytes, and a public page may
list any digest. So here, once user `secret` (project other/secret only) has installed
`acme-secret`, user `writer` (acme/uploads only) uploads another wheel straight to GitLab under the
secret wheel's sha256, and a hostile public index lists that sha256 too. Every route that serves
bytes of a file (the file, HEAD, a range, a conditional GET, `.metadata`, the page's
`core-metadata`) must then answer from the forger's own bytes (a 502 once they fail
verification), never from the cache; and a file legitimately in two sources costs one more
verified download, no more.
"""

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_sdist, make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.hostile_index import HostileIndex, Reply, hostile_index
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until

PROXY_TOKEN = "glpat-isolation-proxy"
WRITER_TOKEN = "glpat-isolation-writer"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
USERS = """
[auth]
anonymous_read = false
passthrough = true

[[users]]
name = "all"
password = "all-password"

[[users]]
name = "secret"
password = "secret-password"
read = ["secret"]

[[users]]
name = "writer"
password = "writer-password"
read = ["uploads"]

[[users]]
name = "main"
password = "main-password"
read = ["platform"]

[[users]]
name = "shared"
password = "shared-password"
read = ["mirror"]

[[users]]
name = "outsider"
password = "outsider-password"
read = ["hostile"]
"""
ALL = ("all", "all-password")  # reads every source, as anonymous does where it may read
SECRET_USER = ("secret", "secret-password")
WRITER = ("writer", "writer-password")
PASSTHROUGH = ("__token__", WRITER_TOKEN)  # the writer's own GitLab token, no proxy user
MAIN = ("main", "main-password")
SHARED = ("shared", "shared-password")
OUTSIDER = ("outsider", "outsider-password")

SECRET = make_wheel("acme-secret", "1.0", requires_dist=["secret-dep"])
LATE = make_wheel("acme-late", "1.0", requires_dist=["late-dep"], pad_bytes=256 * 1024)
# the same file, legitimately in two projects: one per way of asking for it
TOOLS = {
    way: make_wheel(f"shared-{way}", "1.0", requires_dist=["shared-dep"])
    for way in ("get", "range", "if-none-match")
}
OFFLINE_TOOL = make_sdist("shared-offline", "1.0")  # an sdist: no page looks ahead to it
FORGED = make_wheel("team-tool", "1.0")  # any small wheel the writer has
FORGED_NAME = "team_tool-1.0-py3-none-any.whl"
LOGGED_NAME = "log_tool-1.0-py3-none-any.whl"
LATE_NAME = "late_tool-1.0-py3-none-any.whl"
HOSTILE_NAME = "forged_copy-1.0-py3-none-any.whl"
ENDLESS_NAME = "endless_copy-1.0-py3-none-any.whl"
ENDLESS_HELD = threading.Event()  # the endless file's rest, held until the test ends


def endless() -> Iterator[bytes]:
    """8 MiB with no announced length, then nothing until ENDLESS_HELD is set (at most a minute):
    a verification that reads past the cached file's size waits here."""
    yield from (b"\0" * 2**20 for _ in range(8))
    ENDLESS_HELD.wait(60)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    double: GitLabDouble
    hostile: HostileIndex
    proxy: ProxyProcess
    secret_metadata: bytes  # the METADATA the proxy serves for the secret wheel
    config: Path

    def url(self, digest: str, filename: str, suffix: str = "") -> str:
        return f"{self.proxy.url}/files/{digest}/{filename}{suffix}"

    def file_gets(self, project: int, filename: str) -> int:
        """Whole-file GETs of `filename` from GitLab project `project`."""
        path = f"/api/v4/projects/{project}/packages/pypi/files/"
        return sum(
            1
            for r in self.double.requests
            if r.method == "GET"
            and r.path.startswith(path)
            and r.path.endswith("/" + filename)
            and "range" not in r.headers
        )

    def warnings(self, filename: str) -> list[str]:
        return [
            line
            for line in self.proxy.log().splitlines()
            if "WARNING" in line and filename in line and "does not match its listing" in line
        ]


def forge(gitlab_url: str, name: str, filename: str, digest: str) -> None:
    """The writer uploads FORGED's bytes straight to GitLab, listed under `digest`."""
    answer = httpx2.post(
        f"{gitlab_url}/api/v4/projects/13/packages/pypi",
        auth=("writer", WRITER_TOKEN),
        data={"name": name, "version": "1.0", "sha256_digest": digest},
        files={"content": (filename, FORGED[1])},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    double = GitLabDouble()
    for project, path in ((11, "acme/platform"), (12, "other/secret"), (13, "acme/uploads")):
        double.add_project(project, path)
    double.add_project(14, "acme/mirror")
    double.add_token(PROXY_TOKEN, read={11, 12, 13, 14})
    double.add_token(WRITER_TOKEN, write={13})
    double.add_package_file(12, "acme-secret", "1.0", *SECRET)
    double.add_package_file(12, "acme-late", "1.0", *LATE)
    for project in (11, 14):
        for way, tool in TOOLS.items():
            double.add_package_file(project, f"shared-{way}", "1.0", *tool)
        double.add_package_file(project, "shared-offline", "1.0", *OFFLINE_TOOL)
    with serve(double.app) as gitlab, hostile_index() as (hostile, _):
        sources = [
            {"name": "platform", "gitlab_project": 11},
            {"name": "secret", "gitlab_project": 12},
            {"name": "uploads", "gitlab_project": 13},
            {"name": "mirror", "gitlab_project": 14},
            {"name": "hostile", "url": f"{hostile.url}/simple/"},
        ]
        directory = tmp_path_factory.mktemp("isolation")
        config = write_config(directory, gitlab.url, sources, token=PROXY_TOKEN, extra=USERS)
        proxy = start_proxy(config)
        try:
            # 1. `secret` installs acme-secret: the wheel and its METADATA are cached
            wheel = httpx2.get(_file(proxy, SECRET), auth=SECRET_USER, timeout=30)
            assert wheel.status_code == 200 and wheel.content == SECRET[1]
            metadata = httpx2.get(_file(proxy, SECRET, ".metadata"), auth=SECRET_USER)
            assert metadata.status_code == 200 and b"secret-dep" in metadata.content
            # 2. the writer lists its own bytes under the secret wheel's sha256, twice
            forge(gitlab.url, "team-tool", FORGED_NAME, sha(SECRET[1]))
            forge(gitlab.url, "log-tool", LOGGED_NAME, sha(SECRET[1]))
            forge(gitlab.url, "late-tool", LATE_NAME, sha(LATE[1]))
            # 3. and so does a public index, under a name of its own
            hostile.json_page(
                "forged-copy",
                [
                    {
                        "filename": HOSTILE_NAME,
                        "url": f"{hostile.url}/dl/{HOSTILE_NAME}",
                        "hashes": {"sha256": sha(SECRET[1])},
                    }
                ],
            )
            hostile.on(f"/dl/{HOSTILE_NAME}", Reply(body=FORGED[1]))
            hostile.json_page(
                "endless-copy",
                [
                    {
                        "filename": ENDLESS_NAME,
                        "url": f"{hostile.url}/dl/{ENDLESS_NAME}",
                        "hashes": {"sha256": sha(SECRET[1])},
                    }
                ],
            )
            hostile.on(f"/dl/{ENDLESS_NAME}", Reply(body=endless))
            yield World(double, hostile, proxy, metadata.content, config)
        finally:
            ENDLESS_HELD.set()
            proxy.stop()


def _file(proxy: ProxyProcess, wheel: tuple[str, bytes], suffix: str = "") -> str:
    return f"{proxy.url}/files/{sha(wheel[1])}/{wheel[0]}{suffix}"


FORGERS = {
    "user": (WRITER, FORGED_NAME, "uploads"),
    "passthrough": (PASSTHROUGH, FORGED_NAME, "uploads"),
    "url-source": (OUTSIDER, HOSTILE_NAME, "hostile"),
}
VARIANTS = {
    "get": {},
    "range": {"Range": "bytes=0-99"},
    "if-none-match": {"If-None-Match": f'"{sha(SECRET[1])}"'},
}


def _no_secret(response: httpx2.Response, world: World) -> None:
    assert SECRET[1][:64] not in response.content and b"secret-dep" not in response.content
    assert world.secret_metadata not in response.content


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("who", FORGERS)
def test_a_forged_listing_is_verified_against_its_own_source_and_refused(
    world: World, who: str, variant: str
) -> None:
    auth, filename, source = FORGERS[who]
    response = httpx2.get(
        world.url(sha(SECRET[1]), filename), auth=auth, headers=VARIANTS[variant], timeout=30
    )
    assert response.status_code == 502, (response.status_code, response.headers)
    assert response.text == f"source {source}: {filename} sha256 does not match its listing\n"
    _no_secret(response, world)


@pytest.mark.parametrize("who", FORGERS)
def test_head_of_a_forged_listing_says_nothing_of_the_cached_file(world: World, who: str) -> None:
    auth, filename, _ = FORGERS[who]
    response = httpx2.head(world.url(sha(SECRET[1]), filename), auth=auth, timeout=30)
    assert response.headers.get("x-cache") != "HIT"
    assert response.headers.get("content-length") != str(len(SECRET[1]))


@pytest.mark.parametrize("who", FORGERS)
def test_the_metadata_of_a_forged_listing_is_never_the_cached_files(world: World, who: str) -> None:
    auth, filename, _ = FORGERS[who]
    response = httpx2.get(world.url(sha(SECRET[1]), filename, ".metadata"), auth=auth, timeout=30)
    assert response.status_code == 404, response.text
    _no_secret(response, world)


@pytest.mark.parametrize("who", FORGERS)
def test_a_page_listing_a_forged_digest_never_advertises_the_cached_files_metadata(
    world: World, who: str
) -> None:
    auth, filename, _ = FORGERS[who]
    name = "team-tool" if filename == FORGED_NAME else "forged-copy"
    secret_digest = sha(world.secret_metadata)

    def advertised() -> object:
        page = httpx2.get(f"{world.proxy.url}/simple/{name}/", headers=JSON, auth=auth, timeout=30)
        assert page.status_code == 200, page.text
        (entry,) = page.json()["files"]
        return entry.get("core-metadata")

    assert advertised() != {"sha256": secret_digest}
    # the page's look-ahead and a request for the sidecar have tried to obtain it by now
    httpx2.get(world.url(sha(SECRET[1]), filename, ".metadata"), auth=auth, timeout=30)
    assert advertised() != {"sha256": secret_digest}


def test_a_verification_stops_reading_past_the_cached_files_size(world: World) -> None:
    response = httpx2.get(world.url(sha(SECRET[1]), ENDLESS_NAME), auth=OUTSIDER, timeout=30)
    assert response.status_code == 502
    assert response.text == f"source hostile: {ENDLESS_NAME} sha256 does not match its listing\n"
    assert not ENDLESS_HELD.is_set()  # answered while the rest was still held


def test_a_failed_verification_is_one_warning_naming_source_file_and_digest(world: World) -> None:
    before = len(world.warnings(LOGGED_NAME))
    response = httpx2.get(world.url(sha(SECRET[1]), LOGGED_NAME), auth=WRITER, timeout=30)
    assert response.status_code == 502
    lines = world.warnings(LOGGED_NAME)[before:]
    assert len(lines) == 1, lines
    assert "uploads" in lines[0] and sha(SECRET[1]) in lines[0]
    assert "Traceback" not in world.proxy.log()


def test_a_reader_never_follows_a_download_from_a_source_it_may_not_read(world: World) -> None:
    """The secret wheel is on its way from GitLab for `secret` when the writer asks for its
    forgery: the writer does not join that download."""
    release = world.double.hold(LATE[0], after=64 * 1024)
    answers: dict[str, httpx2.Response] = {}

    def get(key: str, url: str, auth: tuple[str, str]) -> None:
        answers[key] = httpx2.get(url, auth=auth, timeout=90)

    def joined() -> int:
        metrics = httpx2.get(f"{world.proxy.url}/metrics", timeout=10).text
        found = re.search(r'single_flight_joins_total\{cache="file"\} (\S+)', metrics)
        return int(float(found.group(1))) if found else 0

    joins = joined()
    secret = threading.Thread(target=get, args=("secret", _file(world.proxy, LATE), SECRET_USER))
    secret.start()
    wait_until(lambda: world.file_gets(12, LATE[0]) == 1, "the secret download to start")
    forged = world.url(sha(LATE[1]), LATE_NAME)
    writer = threading.Thread(target=get, args=("writer", forged, WRITER))
    writer.start()
    try:
        wait_until(lambda: joined() > joins, "the writer to meet the running download")
    finally:
        release.set()
        secret.join(90)
        writer.join(90)
    assert answers["secret"].status_code == 200 and answers["secret"].content == LATE[1]
    assert answers["writer"].status_code == 502, answers["writer"].headers
    assert LATE[1][-4096:] not in answers["writer"].content


@pytest.mark.parametrize(
    ("way", "headers", "status"),
    [
        ("get", {}, 200),
        ("range", {"Range": "bytes=0-99"}, 206),
        ("if-none-match", {"If-None-Match": f'"{sha(TOOLS["if-none-match"][1])}"'}, 304),
    ],
)
def test_a_file_in_two_sources_costs_one_more_verified_download_no_more(
    world: World, way: str, headers: dict[str, str], status: int
) -> None:
    tool = TOOLS[way]
    first = httpx2.get(_file(world.proxy, tool), auth=MAIN, timeout=30)  # from platform
    assert first.status_code == 200 and first.content == tool[1]
    response = httpx2.get(_file(world.proxy, tool), auth=SHARED, headers=headers, timeout=30)
    assert response.status_code == status
    if status == 206:
        assert response.content == tool[1][:100]
    elif status == 200:
        assert response.content == tool[1]
    again = httpx2.get(_file(world.proxy, tool), auth=SHARED, timeout=30)
    assert again.status_code == 200 and again.headers["x-cache"] == "HIT"
    assert again.content == tool[1]
    head = httpx2.head(_file(world.proxy, tool), auth=SHARED, timeout=30)
    assert head.headers["x-cache"] == "HIT"
    assert head.headers["content-length"] == str(len(tool[1]))
    metadata = httpx2.get(_file(world.proxy, tool, ".metadata"), auth=SHARED, timeout=30)
    assert metadata.status_code == 200 and b"shared-dep" in metadata.content
    assert world.file_gets(11, tool[0]) == 1 and world.file_gets(14, tool[0]) == 1


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_readers_of_every_source_are_served_from_the_cache(world: World, method: str) -> None:
    before = world.file_gets(12, SECRET[0])
    response = httpx2.request(method, _file(world.proxy, SECRET), auth=ALL, timeout=30)
    assert response.status_code == 200 and response.headers["x-cache"] == "HIT"
    if method == "GET":
        assert response.content == SECRET[1]
    assert world.file_gets(12, SECRET[0]) == before


def test_offline_a_reader_is_served_only_what_its_own_sources_delivered(world: World) -> None:
    tool = OFFLINE_TOOL
    for auth in (MAIN, SHARED):  # both pages are kept; the file only as platform delivered it
        page = httpx2.get(f"{world.proxy.url}/simple/shared-offline/", auth=auth, timeout=30)
        assert page.status_code == 200
    assert httpx2.get(_file(world.proxy, tool), auth=MAIN, timeout=30).status_code == 200
    offline = start_proxy(world.config, "--offline")
    try:
        kept = httpx2.get(_file(offline, tool), auth=MAIN, timeout=30)
        assert kept.status_code == 200 and kept.content == tool[1]
        refused = httpx2.get(_file(offline, tool), auth=SHARED, timeout=30)
        assert refused.status_code == 404
        assert refused.text.startswith(
            f"the proxy is offline and none of your sources delivered {tool[0]}; fill the cache"
        )
        forged = httpx2.get(
            world.url(sha(SECRET[1]), FORGED_NAME).replace(world.proxy.url, offline.url),
            auth=WRITER,
            timeout=30,
        )
        assert forged.status_code == 404
        _no_secret(forged, world)
    finally:
        offline.stop()
