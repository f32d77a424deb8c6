"""Every route that serves bytes derived from a file obeys the file's read rights, for every kind
of caller, GET and HEAD; and a HEAD on an uncached file downloads nothing.

Project 12 (secret) holds a wheel whose METADATA names `hidden-dep`; only the proxy's own token
and the user `all` may read it. `reader` may read only platform (project 11), and so may the CI
job token that comes through passthrough.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_sdist, make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until

READER_TOKEN = "glpat-rights-reader"
JOB_TOKEN = "glcbt-rights-job"
USERS = """
[[users]]
name = "all"
password = "all-password"

[[users]]
name = "reader"
password = "reader-password"
read = ["platform"]
"""
ALL = ("all", "all-password")
READER = ("reader", "reader-password")
JOB = ("gitlab-ci-token", JOB_TOKEN)
SECRET = make_wheel("secret-pkg", "1.0", requires_dist=["hidden-dep"])
OPEN = make_wheel("open-pkg", "1.0", requires_dist=["open-dep"])
# sdists: a page lists them without the proxy reading the metadata of their newest wheels
UNLISTED = make_sdist("unlisted-pkg", "1.0")
LISTED = make_sdist("listed-pkg", "1.0")


def _url(proxy: ProxyProcess, wheel: tuple[str, bytes], suffix: str = "") -> str:
    return f"{proxy.url}/files/{hashlib.sha256(wheel[1]).hexdigest()}/{wheel[0]}{suffix}"


JSON = "application/vnd.pypi.simple.v1+json"


@dataclass
class World:
    double: GitLabDouble
    closed: ProxyProcess  # anonymous_read = false, passthrough = true
    open: ProxyProcess  # anonymous_read = true


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_project(12, "acme/secret")
    double.add_token(READER_TOKEN, read={11, 12})
    double.add_job_token(JOB_TOKEN, read={11})
    double.add_package_file(12, "secret-pkg", "1.0", *SECRET)
    for name, wheel in (("open-pkg", OPEN), ("unlisted-pkg", UNLISTED), ("listed-pkg", LISTED)):
        double.add_package_file(11, name, "1.0", *wheel)
    sources = [
        {"name": "platform", "gitlab_project": 11},
        {"name": "secret", "gitlab_project": 12},
    ]
    with serve(double.app) as server:
        processes = []
        try:
            for name, auth in (
                ("closed", "anonymous_read = false\npassthrough = true\n"),
                ("open", ""),
            ):
                directory = tmp_path_factory.mktemp(name)
                extra = f"[auth]\n{auth}{USERS}"
                config = write_config(
                    directory, server.url, sources, token=READER_TOKEN, extra=extra
                )
                processes.append(start_proxy(config))
            closed, open_ = processes
            # `all` fetches the secret wheel and its metadata: both are cached from now on
            for proxy in processes:
                for suffix in ("", ".metadata"):
                    for wheel in (SECRET, OPEN):
                        response = httpx2.get(_url(proxy, wheel, suffix), auth=ALL, timeout=30)
                        assert response.status_code == 200, response.text
            yield World(double, closed, open_)
        finally:
            for process in processes:
                process.stop()


ROUTES = {"file": "", "metadata": ".metadata"}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("who", "auth"), [("reader", READER), ("passthrough", JOB)])
def test_a_caller_who_may_not_read_the_file_gets_nothing_derived_from_it(
    world: World, route: str, method: str, who: str, auth: tuple[str, str]
) -> None:
    response = httpx2.request(method, _url(world.closed, SECRET, ROUTES[route]), auth=auth)
    assert response.status_code == 404
    assert response.text in ("", f"no readable source offers {SECRET[0]}{ROUTES[route]}\n")
    assert b"hidden-dep" not in response.content and SECRET[1] not in response.content


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("who", "auth"), [("reader", READER), ("passthrough", JOB)])
def test_the_same_caller_reads_what_its_sources_offer(
    world: World, route: str, method: str, who: str, auth: tuple[str, str]
) -> None:
    response = httpx2.request(method, _url(world.closed, OPEN, ROUTES[route]), auth=auth)
    assert response.status_code == 200
    if method == "GET":
        assert (
            (b"open-dep" in response.content)
            if route == "metadata"
            else response.content == OPEN[1]
        )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("route", ROUTES)
def test_anonymous_without_anonymous_read_is_challenged(
    world: World, route: str, method: str
) -> None:
    response = httpx2.request(method, _url(world.closed, SECRET, ROUTES[route]))
    assert response.status_code == 401
    assert b"hidden-dep" not in response.content
    assert response.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("route", ROUTES)
def test_anonymous_with_anonymous_read_reads_every_source(
    world: World, route: str, method: str
) -> None:
    response = httpx2.request(method, _url(world.open, SECRET, ROUTES[route]))
    assert response.status_code == 200
    if method == "GET":
        assert (
            (b"hidden-dep" in response.content)
            if route == "metadata"
            else response.content == SECRET[1]
        )


def _file_requests(double: GitLabDouble, wheel: tuple[str, bytes]) -> list[str]:
    digest = hashlib.sha256(wheel[1]).hexdigest()
    return [r.method for r in double.requests if f"/files/{digest}/" in r.path]


def test_head_of_an_uncached_listed_file_asks_gitlab_nothing(world: World) -> None:
    def size_listed() -> bool:
        page = httpx2.get(f"{world.open.url}/simple/listed-pkg/", headers={"Accept": JSON})
        return page.status_code == 200 and page.json()["files"][0].get("size") is not None

    # GitLab's sizes arrive in the background (package_files), after the first answer
    wait_until(size_listed, "listed-pkg's page to list its size")
    before = _file_requests(world.double, LISTED)
    head = httpx2.head(_url(world.open, LISTED))
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(LISTED[1]))
    assert head.headers["x-cache"] == "MISS"
    assert _file_requests(world.double, LISTED) == before == []
    get = httpx2.get(_url(world.open, LISTED))  # the HEAD did not fill the cache
    assert get.headers["x-cache"] == "MISS" and get.content == LISTED[1]


def test_head_of_an_uncached_unlisted_file_asks_gitlab_for_its_head_only(world: World) -> None:
    head = httpx2.head(_url(world.open, UNLISTED))  # no page fetched: GitLab is asked by digest
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(UNLISTED[1]))
    assert _file_requests(world.double, UNLISTED) == ["HEAD"]
    missing = httpx2.head(_url(world.open, (UNLISTED[0], b"other bytes")))
    assert missing.status_code == 404


def test_head_for_a_restricted_reader_downloads_nothing_either(world: World) -> None:
    before = len(_file_requests(world.double, UNLISTED))
    head = httpx2.head(_url(world.closed, UNLISTED), auth=READER)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(UNLISTED[1]))
    assert "GET" not in _file_requests(world.double, UNLISTED)[before:]
