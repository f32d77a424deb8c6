"""End to end, the cache disk fills up, or turns read-only, under a running proxy with two
workers. Cached files and pages keep being served, cold ones stream verified without being kept,
a download caught in flight reaches every client whole, uploads answer what GitLab did, health
says what is wrong without asking for a restart, and no worker dies or logs a traceback.
"""

import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.mounts import ext4_image, fill, tmpfs, turn_read_only
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until
from tests.worlds import app_with_dependency

TOKEN = "glpat-disk-fault-reader"
WRITER = "glpat-disk-fault-writer"
CI_PASSWORD = "ci-disk-fault-password"
JSON = {"accept": "application/vnd.pypi.simple.v1+json"}
BIG_NAME, BIG = make_wheel("big-blob", "1.0", pad_bytes=4 * 2**20)
COLD_NAME, COLD = make_wheel("cold-file", "1.0")
HELD = 2**20  # the GitLab double sends this much of BIG, then waits for the test
SETTINGS = """
[upload]
default_source = "platform"

[[users]]
name = "ci"
password = "${DISK_FAULT_CI_PASSWORD}"
read = ["*"]
upload = ["platform"]
gitlab_token = "${DISK_FAULT_GITLAB_TOKEN}"
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def deployment(
    tmp_path: Path, mount: Callable[[Path, str], contextlib.AbstractContextManager[Path]]
) -> Iterator[tuple[ProxyProcess, GitLabDouble, Path]]:
    """Two workers over a cache directory that is its own small file system."""
    double = app_with_dependency(TOKEN, ("big-blob", BIG_NAME, BIG), ("cold-file", COLD_NAME, COLD))
    double.add_token(WRITER, write={11})
    with serve(double.app) as server, mount(tmp_path / "cache", "48m") as cache:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(tmp_path, server.url, sources, token=TOKEN, extra=SETTINGS)
        env = {"DISK_FAULT_CI_PASSWORD": CI_PASSWORD, "DISK_FAULT_GITLAB_TOKEN": WRITER}
        proxy = start_proxy(config, "--workers", "2", env=env)
        try:
            seen: set[int] = set()

            def both_workers_answer() -> bool:
                with client(proxy.url) as connection:
                    seen.add(pid_of(connection))
                return len(seen) == 2

            # healthz answered from one worker: the other may still be opening the cache
            wait_until(both_workers_answer, "both workers answer")
            yield proxy, double, cache
        finally:
            proxy.stop()


def client(url: str) -> httpx2.Client:
    """One keep-alive connection: every request on it goes to the worker that accepted it."""
    return httpx2.Client(base_url=url, timeout=60, limits=httpx2.Limits(max_connections=1))


def pid_of(connection: httpx2.Client) -> int:
    return connection.get("/readyz").json()["pid"]


def connections(url: str) -> Iterator[tuple[int, httpx2.Client]]:
    """New connections and the worker that accepted each (the kernel picks), a bounded number."""
    for _ in range(400):
        connection = client(url)
        yield pid_of(connection), connection


def on_one_worker(url: str, count: int) -> list[httpx2.Client]:
    """`count` connections that the same worker accepted."""
    found: dict[int, list[httpx2.Client]] = {}
    try:
        for pid, connection in connections(url):
            found.setdefault(pid, []).append(connection)
            if len(found[pid]) == count:
                return found.pop(pid)
    finally:
        for other in found.values():
            for connection in other:
                connection.close()
    raise AssertionError(f"no worker accepted {count} connections")


def on_each_worker(url: str, workers: int) -> Iterator[httpx2.Client]:
    """A connection to each worker in turn, opened only once the last one is done with."""
    seen: set[int] = set()
    for pid, connection in connections(url):
        try:
            if pid not in seen:
                seen.add(pid)
                yield connection
                assert pid_of(connection) == pid  # the same worker answered it all, and lives on
        finally:
            connection.close()
        if len(seen) == workers:
            return
    raise AssertionError(f"reached only workers {seen}")


def warm_up(proxy: ProxyProcess, double: GitLabDouble) -> list[tuple[str, str, bytes]]:
    """Pages and files of app-main and app-dep in the cache; (sha256, file name, bytes) of the
    files. The pages of the packages uploaded later are cached as absent."""
    with client(proxy.url) as connection:
        for name in ("app-main", "app-dep"):
            page = connection.get(f"/simple/{name}/", headers=JSON)
            assert page.status_code == 200
            for file in page.json()["files"]:
                answer = connection.get(f"/simple/{name}/{file['url']}")
                assert answer.status_code == 200
                assert sha256(answer.content) == file["hashes"]["sha256"]
        for number in range(3):
            assert connection.get(f"/simple/uploaded-{number}/").status_code == 404
    kept = [f for f in double.files if f.name in ("app-main", "app-dep")]
    return [(f.sha256, f.filename, f.content) for f in kept]


@dataclass
class Received:
    status: int = 0
    cache: str = ""
    size: int = 0
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    error: str = ""


def followers_get_whole_files(proxy: ProxyProcess, double: GitLabDouble, fault: Callable) -> None:
    """Three clients follow one download on one worker; `fault` strikes while it is in flight."""
    release = double.hold(BIG_NAME, after=HELD)
    followers = on_one_worker(proxy.url, 3)
    received = [Received() for _ in followers]

    def download(connection: httpx2.Client, into: Received) -> None:
        try:
            with connection.stream("GET", f"/files/{sha256(BIG)}/{BIG_NAME}") as response:
                into.status, into.cache = response.status_code, response.headers["x-cache"]
                for chunk in response.iter_bytes():
                    into.size += len(chunk)
                    into.digest.update(chunk)
        except httpx2.HTTPError as exc:
            into.error = repr(exc)

    threads = [
        threading.Thread(target=download, args=pair, daemon=True)
        for pair in zip(followers, received, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(r.size > 0 for r in received), "every client has the first bytes")
        fault()
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=60)
        for connection in followers:
            connection.close()
    for got in received:
        assert (got.error, got.status, got.size) == ("", 200, len(BIG))
        assert got.digest.hexdigest() == sha256(BIG)
    del double.holds[BIG_NAME]


def upload(connection: httpx2.Client, name: str) -> httpx2.Response:
    filename, data = make_wheel(name, "1.0")
    return connection.post(
        "/upload/",
        auth=("ci", CI_PASSWORD),
        data={"name": name, "version": "1.0", ":action": "file_upload"},
        files={"content": (filename, data)},
    )


def serves_without_writing(
    proxy: ProxyProcess, double: GitLabDouble, warm: list[tuple[str, str, bytes]], state: str
) -> None:
    """Every worker: cached files and pages from the cache, cold ones unkept and verified,
    uploads as GitLab answered them, health saying what is wrong."""
    for number, connection in enumerate(on_each_worker(proxy.url, 2)):
        for digest, filename, data in warm:
            hit = connection.get(f"/files/{digest}/{filename}")
            assert (hit.status_code, hit.headers["x-cache"]) == (200, "HIT")
            assert hit.content == data
        for name in ("app-main", "app-dep"):
            assert connection.get(f"/simple/{name}/", headers=JSON).status_code == 200
        cold_page = connection.get("/simple/cold-file/", headers=JSON)
        assert cold_page.status_code == 200
        (listed,) = cold_page.json()["files"]
        for _ in range(2):
            cold = connection.get(f"/simple/cold-file/{listed['url']}")
            assert (cold.status_code, cold.headers["x-cache"]) == (200, "BYPASS")
            assert cold.content == COLD
        metadata = connection.get(f"/files/{sha256(COLD)}/{COLD_NAME}.metadata")
        assert metadata.status_code == 200 and b"Name: cold-file" in metadata.content

        stored = upload(connection, f"uploaded-{number}")
        assert stored.status_code == 201, stored.text
        assert [f.name for f in double.files].count(f"uploaded-{number}") == 1
        if number == 0:  # the retry of an upload GitLab took is GitLab's own answer
            assert upload(connection, "uploaded-0").status_code == 409
        page = connection.get(f"/simple/uploaded-{number}/", headers=JSON)
        assert page.status_code == 200  # read-your-writes on the worker that took it
        assert [f["filename"] for f in page.json()["files"]] == [
            make_wheel(f"uploaded-{number}", "1.0")[0]
        ]

        health = connection.get("/healthz")
        assert health.status_code == 200 and health.text.startswith("ok")
        ready = connection.get("/readyz")
        body = ready.json()
        assert ready.status_code == 200 and body["ready"] is True
        assert body["cache"]["writable"] is False and body["cache"]["state"] == state
        assert f"cache directory {state}" in body["mode"]
        assert f"cache directory {state}" in connection.get("/").text
        scrape = connection.get("/metrics").text
        assert re.search(r"^gitlab_pypi_proxy_cache_writable 0\.0$", scrape, re.M)
    log = proxy.log()
    assert "Traceback" not in log and "died" not in log
    assert not re.search(r'" 5\d\d \d', log), "a 5xx in the access log"
    assert log.count("Started server process") == 2  # the two workers, never restarted


def test_a_full_cache_disk_serves_what_it_has_and_streams_the_rest(tmp_path: Path) -> None:
    with deployment(tmp_path, tmpfs) as (proxy, double, cache):
        warm = warm_up(proxy, double)
        followers_get_whole_files(proxy, double, lambda: fill(cache))
        fill(cache)  # anything the last download gave back
        serves_without_writing(proxy, double, warm, "full")


def test_a_cache_disk_turned_read_only_keeps_serving(tmp_path: Path) -> None:
    with deployment(tmp_path, ext4_image) as (proxy, double, cache):
        warm = warm_up(proxy, double)
        followers_get_whole_files(proxy, double, lambda: turn_read_only(cache))
        serves_without_writing(proxy, double, warm, "read-only")
