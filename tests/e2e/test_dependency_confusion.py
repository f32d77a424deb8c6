"""A name published straight to GitLab (a CI pipeline's own upload, not through the proxy) after
the public index answered for it stops coming from the public index by the next poll of the GitLab
sources, even when the "not here" was kept by dependency warming and is trusted for an hour, and
its public file's URL (which a lock file keeps) is refused from then on; the poll is one request
per GitLab source per interval, whatever the number of workers."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import httpx2

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble, Recorded
from gitlab_pypi_proxy.index.name_poll import INTERVAL_ENV
from tests.clients import pip_install
from tests.proxy_process import start_proxy, write_config
from tests.servers import serve
from tests.static_index import StaticIndex
from tests.waiting import wait_until

TOKEN = "glpat-confusion"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
INTERVAL = 2.0  # seconds between polls (60 unless a test says otherwise)
PROJECT_POLL = "/api/v4/projects/11/packages/pypi/simple"
GROUP_POLL = "/api/v4/groups/acme/packages"
DEP_PAGE = "/api/v4/projects/11/packages/pypi/simple/shared-dep"


def _installed(target: Path) -> set[str]:
    return {p.name for p in target.iterdir() if p.name.endswith(".dist-info")}


def _polls(double: GitLabDouble, path: str) -> list[Recorded]:
    """The polls GitLab saw at `path` (a group's listing for a name's upload times is not one)."""
    return [r for r in double.matching(path) if "package_name" not in r.query]


def _spaced(arrivals: list[float]) -> bool:
    """Did GitLab see at most one poll per interval (with room for one late request)?"""
    return all(b - a >= INTERVAL / 2 for a, b in pairwise(arrivals))


def test_a_name_published_straight_to_gitlab_stops_coming_from_the_public_index(
    tmp_path: Path,
) -> None:
    double = GitLabDouble()
    double.add_group(5, "acme")
    double.add_project(11, "acme/platform")
    double.add_token(TOKEN, read={11})
    # pip on Linux leaves the Windows-only requirement out; warming asks for it all the same
    requires = ['shared-dep; platform_system == "Windows"']
    double.add_package_file(
        11, "app-main", "1.0", *make_wheel("app-main", "1.0", requires_dist=requires)
    )
    public = StaticIndex()
    public.add_wheel("shared-dep", "1.0", datetime.now(UTC) - timedelta(days=30))
    with serve(double.app) as gitlab, serve(public.app) as index:
        sources = [
            {"name": "p11", "gitlab_project": 11},
            {"name": "acme", "gitlab_group": "acme"},
            {"name": "public", "url": f"{index.url}/simple/"},
        ]
        # a "not here" is kept for an hour: only the poll can tell the proxy otherwise
        config = write_config(
            tmp_path, gitlab.url, sources, token=TOKEN, index_ttl=3600, cache={"negative_ttl": 3600}
        )
        proxy = start_proxy(config, "--workers", "2", env={INTERVAL_ENV: str(INTERVAL)})
        try:
            home = tmp_path / "home"
            done = pip_install(f"{proxy.url}/simple/", tmp_path / "one", "app-main", home=home)
            assert done.returncode == 0, done.stderr
            assert _installed(tmp_path / "one") == {"app_main-1.0.dist-info"}
            wait_until(lambda: double.count("GET", DEP_PAGE), "shared-dep warmed, not asked")
            page = f"{proxy.url}/simple/shared-dep/"
            listed = httpx2.get(page, headers=JSON).json()
            assert listed["_source"] == "public"
            public_url = httpx2.URL(page).join(listed["files"][0]["url"])
            assert httpx2.get(public_url).status_code == 200  # a lock file keeps this URL

            filename, data = make_wheel("shared-dep", "2.0")
            double.add_package_file(11, "Shared_Dep", "2.0", filename, data)  # by CI, straight
            wait_until(
                lambda: httpx2.get(page, headers=JSON).json()["_source"] != "public",
                "the name served from GitLab",
            )
            forgotten = 'their "not here" forgotten: shared-dep'
            assert forgotten in proxy.log()  # by the poll, not by a "not here" run out
            refused = httpx2.get(public_url)  # the public file, whatever the client kept
            assert refused.status_code == 404, refused.text
            assert "a name a GitLab source has" in refused.text
            done = pip_install(f"{proxy.url}/simple/", tmp_path / "two", "shared-dep", home=home)
            assert done.returncode == 0, done.stderr
            assert _installed(tmp_path / "two") == {"shared_dep-2.0.dist-info"}

            wait_until(lambda: len(_polls(double, GROUP_POLL)) >= 3, "a few polls")
            for path in (PROJECT_POLL, GROUP_POLL):
                arrivals = [r.at for r in _polls(double, path)]
                assert _spaced(arrivals), arrivals
            assert "Traceback" not in proxy.log()
        finally:
            proxy.stop()
