"""End to end, builds keep installing from the proxy's verified cache with GitLab gone."""

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import clear_client_caches, pip_install, uv_install
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.worlds import app_with_dependency

TOKEN = "glpat-cache-reader"


@pytest.fixture
def proxy_and_gitlab(tmp_path: Path) -> Iterator[tuple[ProxyProcess, GitLabDouble, object]]:
    double = app_with_dependency(TOKEN)
    with serve(double.app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        # index_ttl = 0: every page request revalidates, so the stale path is what serves
        config = write_config(tmp_path, server.url, sources, token=TOKEN, index_ttl=0)
        proxy = start_proxy(config)
        try:
            yield proxy, double, server
        finally:
            proxy.stop()


@pytest.mark.parametrize("install", [pip_install, uv_install], ids=["pip", "uv"])
def test_installs_again_with_gitlab_down(proxy_and_gitlab, tmp_path: Path, install) -> None:
    proxy, _, server = proxy_and_gitlab
    home = tmp_path / "home"
    first = install(f"{proxy.url}/simple/", tmp_path / "one", "app-main", home=home)
    assert first.returncode == 0, first.stderr
    server.stop()
    clear_client_caches(home)
    second = install(f"{proxy.url}/simple/", tmp_path / "two", "app-main", home=home)
    assert second.returncode == 0, second.stderr
    assert {"app_main-1.0.dist-info", "app_dep-2.0.dist-info"} <= {
        p.name for p in (tmp_path / "two").iterdir()
    }
    page = httpx2.get(f"{proxy.url}/simple/app-main/")
    assert page.headers["x-cache"] == "STALE"
    assert "warning" in page.headers


def test_offline_mode_serves_the_cache_and_never_calls_gitlab(tmp_path: Path) -> None:
    double = app_with_dependency(TOKEN)
    home = tmp_path / "home"
    with serve(double.app) as server:
        config = write_config(
            tmp_path, server.url, [{"name": "p", "gitlab_project": 11}], token=TOKEN
        )
        proxy = start_proxy(config)
        try:
            result = pip_install(f"{proxy.url}/simple/", tmp_path / "one", "app-main", home=home)
            assert result.returncode == 0, result.stderr
        finally:
            proxy.stop()
        calls = len(double.requests)
        offline = start_proxy(config, "--offline")
        try:
            clear_client_caches(home)
            result = pip_install(f"{offline.url}/simple/", tmp_path / "two", "app-main", home=home)
            assert result.returncode == 0, result.stderr
            missing = httpx2.get(f"{offline.url}/simple/never-seen/")
            assert missing.status_code == 404  # definite: no client retries it
            assert missing.text == (
                "the proxy is offline and has no cached copy of never-seen; fill the cache while "
                "online (gitlab-pypi-proxy prefetch) to have it offline\n"
            )
            asked = pip_install(
                f"{offline.url}/simple/", tmp_path / "three", "other-never-seen", home=home
            )
            assert asked.returncode != 0 and "other-never-seen" in asked.stderr
            # pip asked once and took the answer (a 503 it retries, five times more)
            assert offline.log().count('"GET /simple/other-never-seen/"') == 1
        finally:
            offline.stop()
        assert len(double.requests) == calls


def test_wrong_bytes_are_refused_and_never_cached(tmp_path: Path) -> None:
    double = app_with_dependency(TOKEN)
    filename, good = make_wheel("app-dep", "2.0")
    with serve(double.app) as server:
        config = write_config(
            tmp_path, server.url, [{"name": "p", "gitlab_project": 11}], token=TOKEN
        )
        proxy = start_proxy(config)
        try:
            double.replace_content(11, filename, good[:-10] + b"0123456789")
            bad = pip_install(
                f"{proxy.url}/simple/", tmp_path / "a", "app-dep", home=tmp_path / "h1"
            )
            assert bad.returncode != 0
            assert "not kept" in proxy.log()
            double.replace_content(11, filename, good)
            ok = pip_install(
                f"{proxy.url}/simple/", tmp_path / "b", "app-dep", home=tmp_path / "h2"
            )
            assert ok.returncode == 0, ok.stderr
            page = httpx2.get(
                f"{proxy.url}/simple/app-dep/",
                headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            ).json()
            url = f"{proxy.url}/simple/app-dep/{page['files'][0]['url']}"
            cached = httpx2.get(url)
            assert cached.headers["x-cache"] == "HIT"
            assert hashlib.sha256(cached.content).hexdigest() == hashlib.sha256(good).hexdigest()
        finally:
            proxy.stop()


async def _fetch_all(url: str, count: int) -> list[bytes]:
    async with httpx2.AsyncClient(timeout=60) as client:

        async def one() -> bytes:
            response = await client.get(url)
            response.raise_for_status()
            return response.content

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.mark.parametrize("page_first", [False, True])
def test_concurrent_requests_for_one_file_reach_gitlab_once(
    tmp_path: Path, page_first: bool
) -> None:
    """With its page asked first, the page's look-ahead reads the wheel's tail and declines (the
    wheel is large): the lock it let go of once had two holders, one per worker (2 downloads)."""
    double = GitLabDouble(latency=0.05 if page_first else 0.0)
    double.add_project(11, "acme/platform", public=True)
    filename, data = make_wheel("big-one", "1.0", pad_bytes=8 * 2**20)
    sha = double.add_package_file(11, "big-one", "1.0", filename, data)
    with serve(double.app) as server:
        config = write_config(tmp_path, server.url, [{"name": "p", "gitlab_project": 11}])
        proxy = start_proxy(config, "--workers", "2")  # as the README recommends on 2 cores
        try:
            if page_first:
                assert httpx2.get(f"{proxy.url}/simple/big-one/").status_code == 200
            bodies = asyncio.run(_fetch_all(f"{proxy.url}/files/{sha}/{filename}", 20))
        finally:
            proxy.stop()
    assert len(bodies) == 20
    assert all(body == data for body in bodies)
    asked = double.matching(rf"/api/v4/projects/11/packages/pypi/files/{sha}/.*")
    assert len([r for r in asked if "range" not in r.headers]) == 1  # whole: once
    assert len(asked) <= (3 if page_first else 1)  # and at most the look-ahead's two ranged reads


def test_a_large_file_streams_through_and_is_kept(tmp_path: Path) -> None:
    double = GitLabDouble()
    double.add_project(11, "acme/platform", public=True)
    filename, data = make_wheel("huge", "1.0", pad_bytes=100 * 2**20)
    sha = double.add_package_file(11, "huge", "1.0", filename, data)
    with serve(double.app) as server:
        config = write_config(tmp_path, server.url, [{"name": "p", "gitlab_project": 11}])
        proxy = start_proxy(config)
        try:
            url = f"{proxy.url}/files/{sha}/{filename}"
            for expected_cache in ("MISS", "HIT"):
                digest = hashlib.sha256()
                with httpx2.stream("GET", url, timeout=60) as response:
                    assert response.headers["x-cache"] == expected_cache
                    assert response.headers["content-length"] == str(len(data))
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                assert digest.hexdigest() == sha
        finally:
            proxy.stop()
    assert double.count("GET", f"/api/v4/projects/11/packages/pypi/files/{sha}") == 1


def test_a_cache_that_cannot_be_written_serves_files_verified_without_keeping(
    proxy_and_gitlab, tmp_path: Path
) -> None:
    proxy, _, _ = proxy_and_gitlab
    incoming = tmp_path / "cache" / "files" / "incoming"
    incoming.rmdir()
    incoming.write_bytes(b"")  # every new temporary file now fails, as on a full disk
    result = pip_install(f"{proxy.url}/simple/", tmp_path / "site", "app-main", home=tmp_path / "h")
    assert result.returncode == 0, result.stderr
    assert "serving files without keeping them" in proxy.log()
    page = httpx2.get(
        f"{proxy.url}/simple/app-dep/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    ).json()
    again = httpx2.get(f"{proxy.url}/simple/app-dep/{page['files'][0]['url']}")
    assert again.status_code == 200
    assert again.headers["x-cache"] == "BYPASS"  # still not kept, still served
    assert hashlib.sha256(again.content).hexdigest() == page["files"][0]["hashes"]["sha256"]
