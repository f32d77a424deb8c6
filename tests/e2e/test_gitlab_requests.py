"""End to end, what the proxy spends of GitLab's rate limit.

A name no GitLab source has costs one simple-page request per source, once per negative TTL (no
Packages API call beside it), until an upload through the proxy claims the name, after which the
public index no longer answers it. GitLab's 429 is honoured by the server's two workers and by
prefetch: nothing is asked again before its Retry-After, stale pages are served meanwhile, and a
name not cached gets a 503 naming GitLab's limit. A small wheel a cold install needs is asked
of GitLab once: the read for its metadata is the download the client joins; the pages of what it
requires are asked before the client asks for them.
"""

from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.index.wheel_metadata import TAIL
from tests.clients import clear_client_caches, pip_install, twine_upload
from tests.e2e.test_prefetch import GITLAB_SOURCES, prefetch
from tests.e2e.test_prefetch import TOKEN as PREFETCH_TOKEN
from tests.e2e.test_prefetch import _double as prefetch_double
from tests.proxy_process import start_proxy, write_config
from tests.public_index import pypiserver
from tests.servers import serve
from tests.waiting import wait_until
from tests.worlds import app_with_dependency

TOKEN = "glpat-requests-test"
DEPLOY_TOKEN = "gldt-requests-deploy"
CI_PASSWORD = "ci-requests-password"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
PROJECTS = (11, 12, 13)


def _throttled(double: GitLabDouble) -> int:
    return sum(1 for r in double.requests if r.status == 429)


def test_a_name_no_gitlab_source_has_costs_one_request_per_source_until_an_upload_claims_it(
    tmp_path: Path,
) -> None:
    double = GitLabDouble()
    for project in PROJECTS:
        double.add_project(project, f"acme/p{project}")
    double.add_token(TOKEN, read=set(PROJECTS))
    double.add_token(DEPLOY_TOKEN, write={11})
    with pypiserver(tmp_path / "public") as public, serve(double.app) as gitlab:
        public.add(*make_wheel("pub-only", "1.0"))
        public.add(*make_wheel("claimed", "9.0"))
        sources: list[dict[str, object]] = [
            {"name": f"p{p}", "gitlab_project": p} for p in PROJECTS
        ]
        sources.append({"name": "public", "url": public.url})
        extra = f"""
[[users]]
name = "ci"
password = "{CI_PASSWORD}"
upload = ["p11"]
gitlab_token = "{DEPLOY_TOKEN}"
"""
        # pages revalidate on every request; a "not here" is kept for an hour
        config = write_config(
            tmp_path,
            gitlab.url,
            sources,
            token=TOKEN,
            index_ttl=0,
            cache={"negative_ttl": 3600},
            extra=extra,
        )
        proxy = start_proxy(config, "--workers", "2")
        try:
            home = tmp_path / "home"
            for target in ("one", "two"):
                result = pip_install(
                    f"{proxy.url}/simple/", tmp_path / target, "pub-only", home=home
                )
                assert result.returncode == 0, result.stderr
                clear_client_caches(home)
            for project in PROJECTS:
                simple = f"/api/v4/projects/{project}/packages/pypi/simple/pub-only"
                assert double.count("GET", simple) == 1
            assert not double.matching(r"/api/v4/projects/\d+/packages")  # nothing beside them

            claimed = httpx2.get(f"{proxy.url}/simple/claimed/", headers=JSON).json()
            assert claimed["_source"] == "public"
            wheel = tmp_path / make_wheel("claimed", "1.0")[0]
            wheel.write_bytes(make_wheel("claimed", "1.0")[1])
            upload = twine_upload(
                f"{proxy.url}/upload/p11/", [wheel], user="ci", password=CI_PASSWORD, home=home
            )
            assert upload.returncode == 0, upload.stdout + upload.stderr
            # the upload forgot the "not here": the name is GitLab's now, 9.0 is never offered
            claimed = httpx2.get(f"{proxy.url}/simple/claimed/", headers=JSON).json()
            assert claimed["_source"] == "p11"
            assert [f["filename"] for f in claimed["files"]] == ["claimed-1.0-py3-none-any.whl"]
        finally:
            proxy.stop()


def test_gitlabs_429_is_honoured_by_every_worker_and_never_hammered(tmp_path: Path) -> None:
    double = app_with_dependency(TOKEN)
    with serve(double.app) as gitlab:
        config = write_config(
            tmp_path,
            gitlab.url,
            [{"name": "platform", "gitlab_project": 11}],
            token=TOKEN,
            index_ttl=0,
            cache={"warm_dependencies": False},  # app-dep stays uncached until asked for
        )
        proxy = start_proxy(config, "--workers", "2")
        try:
            page = f"{proxy.url}/simple/app-main/"
            assert httpx2.get(page).status_code == 200
            # let the background work of that page (details, metadata of every wheel) finish
            wait_until(
                lambda: all(
                    {"size", "core-metadata"} <= set(file)
                    for file in httpx2.get(page, headers=JSON).json()["files"]
                ),
                "app-main's details and metadata",
            )
            double.throttle(seconds=2, retry_after=2)
            stale = httpx2.get(page)
            assert stale.status_code == 200
            assert stale.headers["x-cache"] == "STALE"
            limited = httpx2.get(f"{proxy.url}/simple/app-dep/")
            assert limited.status_code == 503
            assert "GitLab's rate limit (HTTP 429 Too Many Requests)" in limited.text
            assert 1 <= int(limited.headers["retry-after"]) <= 2
            # clients keep asking (pip retries a 503): not one of them reaches GitLab early
            wait_until(
                lambda: httpx2.get(f"{proxy.url}/simple/app-dep/").status_code == 200,
                "app-dep once GitLab's Retry-After has passed",
            )
            # the first 429, and at most one request the other worker had on its way (its
            # background work for the page, under load) when the first came back
            assert 1 <= _throttled(double) <= 2
            # the last came through: app-dep's page, or the look-ahead's ranged read of its wheel
            assert double.requests[-1].status in (200, 206)
            assert "Traceback" not in proxy.log()
        finally:
            proxy.stop()


def test_prefetch_waits_out_gitlabs_429(tmp_path: Path) -> None:
    double = prefetch_double()
    with serve(double.app) as gitlab:
        config = write_config(tmp_path, gitlab.url, GITLAB_SOURCES, token=PREFETCH_TOKEN)
        double.throttle(seconds=2, retry_after=2)
        result = prefetch(config, "--source", "tools")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "fetched: 3 (" in result.stdout  # tool-x 1.0 and 1.1, unrelated 3.0
        assert _throttled(double) == 1


def test_a_cold_name_the_root_index_lists_asks_its_page_and_listing_at_once(
    tmp_path: Path,
) -> None:
    """A worker's first page starts the poll for new names, which reads the project's
    root index; then a never-seen name it lists has the Packages API listing sent while its
    simple page is still on its way (one round trip), a name it does not list has its simple
    page only."""
    hold = 3.0  # seconds GitLab holds the page: the listing must arrive meanwhile
    double = GitLabDouble()
    double.add_project(11, "acme/p11")
    double.add_token(TOKEN, read={11})
    filename, data = make_wheel("app-held", "1.0")
    double.add_package_file(11, "app-held", "1.0", filename, data)
    with serve(double.app) as gitlab:
        config = write_config(
            tmp_path,
            gitlab.url,
            [{"name": "p11", "gitlab_project": 11}],
            token=TOKEN,
            extra='[server]\nlog_level = "debug"\n',
        )
        proxy = start_proxy(config, "--workers", "1")
        try:
            assert not double.matching(r"/api/v4/projects/11/packages/pypi/simple")  # not yet
            assert httpx2.get(f"{proxy.url}/simple/not-listed/").status_code == 404
            wait_until(
                lambda: "source p11: polled for new names: 1 names" in proxy.log(),
                "the root index read with the worker's first page",
            )
            page = "/api/v4/projects/11/packages/pypi/simple/app-held"
            double.latency_for[page] = hold
            answer = httpx2.get(f"{proxy.url}/simple/app-held/", headers=JSON, timeout=60)
            assert answer.status_code == 200
            assert answer.json()["files"][0]["upload-time"]
            (asked,) = double.matching(page)
            listings = double.matching(r"/api/v4/projects/11/packages")
            assert len(listings) == 1 and listings[0].at < asked.at + hold
            assert httpx2.get(f"{proxy.url}/simple/not-listed-either/").status_code == 404
            assert len(double.matching(r"/api/v4/projects/11/packages")) == 1
            assert "Traceback" not in proxy.log()
        finally:
            proxy.stop()


def test_a_cold_install_asks_gitlab_for_each_small_wheel_once(tmp_path: Path) -> None:
    double = app_with_dependency(TOKEN)
    with serve(double.app) as gitlab:
        config = write_config(
            tmp_path, gitlab.url, [{"name": "platform", "gitlab_project": 11}], token=TOKEN
        )
        proxy = start_proxy(config, "--workers", "2")
        try:
            target = tmp_path / "site"
            result = pip_install(f"{proxy.url}/simple/", target, "app-main", home=tmp_path / "h")
            assert result.returncode == 0, result.stderr
            assert {p.name for p in target.glob("*.dist-info")} == {
                "app_main-1.0.dist-info",
                "app_dep-2.0.dist-info",
            }
            files = "/api/v4/projects/11/packages/pypi/files/"
            asked = {f.filename: double.matching(rf"{files}{f.sha256}/.*") for f in double.files}
            # once: the ranged read for its metadata (the wheel is smaller than it) is kept
            # whole and pip's GET joins it or finds it kept, or pip's GET came first and the
            # read joined that. It was asked twice before: that read, then pip's download.
            assert {n: len(a) for n, a in asked.items()} == {n: 1 for n in asked}
            assert all(
                r.headers.get("range", f"bytes=-{TAIL}") == f"bytes=-{TAIL}"
                for a in asked.values()
                for r in a
            )
        finally:
            proxy.stop()


@pytest.mark.parametrize("warm", [True, False])
def test_the_page_of_a_dependency_is_asked_before_the_client_asks(
    tmp_path: Path, warm: bool
) -> None:
    dep_page = "/api/v4/projects/11/packages/pypi/simple/app-dep"
    double = app_with_dependency(TOKEN)
    with serve(double.app) as gitlab:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(
            tmp_path, gitlab.url, sources, token=TOKEN, cache={"warm_dependencies": warm}
        )
        proxy = start_proxy(config)
        try:
            page = f"{proxy.url}/simple/app-main/"
            assert httpx2.get(page).status_code == 200  # nobody asks for app-dep
            # app-main's wheel was read for its metadata (`Requires-Dist: app-dep`)
            wait_until(
                lambda: "core-metadata" in httpx2.get(page, headers=JSON).json()["files"][0],
                "app-main's metadata",
            )
            if warm:
                wait_until(lambda: double.count("GET", dep_page), "app-dep's page warmed")
                assert httpx2.get(f"{proxy.url}/simple/app-dep/").status_code == 200
                assert double.count("GET", dep_page) == 1  # the client's came from the cache
            else:
                assert double.count("GET", dep_page) == 0
        finally:
            proxy.stop()
