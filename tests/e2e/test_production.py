"""End to end, the proxy as a service. Status page in a real browser, metrics summed over
two workers, JSON access logs, health and readiness, a path prefix behind a trusted reverse proxy,
graceful shutdown, and two replicas on their own caches answering alike.
"""

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from bs4 import BeautifulSoup
from prometheus_client.parser import text_string_to_metric_families

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import pip_install, twine_upload
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import Server, serve
from tests.waiting import wait_until
from tests.worlds import app_with_dependency

TOKEN = "glpat-production-reader"
DEPLOY_TOKEN = "glpat-production-deployer"
CI_PASSWORD = "ci-production-password"


PROXY_SETTINGS = """
[server]
base_path = "/pypi"
trusted_proxies = ["127.0.0.1"]
graceful_shutdown = 20
"""


@dataclass
class Deployment:
    proxy: ProxyProcess
    double: GitLabDouble
    server: Server

    @property
    def root(self) -> str:
        return f"{self.proxy.url}/pypi/"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two workers over one cache, under /pypi, trusting 127.0.0.1 as its reverse proxy."""
    tmp_path = tmp_path_factory.mktemp("production")
    double = app_with_dependency(TOKEN)
    with serve(double.app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(tmp_path, server.url, sources, token=TOKEN, extra=PROXY_SETTINGS)
        proxy = start_proxy(config, "--workers", "2", "--log-format", "json")
        try:
            yield Deployment(proxy, double, server)
        finally:
            proxy.stop()


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx2.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_status_page_in_headless_chromium(deployment: Deployment, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (.ci/run installs it)"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            deployment.root,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    page = BeautifulSoup(result.stdout, "html.parser")
    seen = page.get_text(" ", strip=True)
    assert page.title is not None and page.title.get_text() == "gitlab-pypi-proxy"
    headings = [h.get_text() for h in page.find_all("h2")]
    assert headings == [
        "State",
        "Workers",
        "Sources",
        "Views",
        "Private names also on a public index",
        "Cache",
        "Supply-chain policy",
        "Recent uploads",
        "Use this proxy",
    ]
    ready = httpx2.get(f"{deployment.root}readyz").json()
    assert ready["ready"] is True and "State: ready" in seen  # what readyz answers
    rows = [[td.get_text() for td in tr.find_all("td")] for tr in page.find_all("tr")]
    platform = next(row for row in rows if row and row[0] == "platform")
    assert platform[1] == "gitlab_project" and platform[4] in ("up", "unknown")
    assert platform[2] == f"{deployment.server.url} project 11" and platform[3] == "token set"
    assert "Version" in seen and "Up for" in seen and "proxy.toml" in seen
    assert "File hit ratio" in seen and "Index page hit ratio" in seen and "Evictions" in seen
    assert "none yet" in seen and "Failed uploads since start" in seen
    # the supervisor (the pid serve was started as) and its two workers, each with its memory
    workers = page.find("h2", string="Workers").find_next("table")
    cells = [[td.get_text() for td in tr.find_all("td")] for tr in workers.find_all("tr")[1:]]
    assert [c[0].split(" ")[0] for c in cells] == ["supervisor", "worker", "worker"]
    assert cells[0][1] == str(deployment.proxy.process.pid)
    assert all(c[2].endswith("MiB") for c in cells), cells
    assert "2 worker(s) on this machine" in seen
    index = f"{deployment.root}simple/"
    snippets = {h3.get_text(): h3.find_next("pre").get_text() for h3 in page.find_all("h3")}
    assert f"index-url = {index}" in snippets["pip.conf (or PIP_INDEX_URL)"]
    assert f'url = "{index}"' in snippets["uv.toml (or [tool.uv] in pyproject.toml)"]
    assert f"poetry source add --priority=primary proxy {index}" in snippets["poetry"]
    assert f'url = "{index}"' in snippets["pdm (pyproject.toml)"]
    # no [[users]] and no passthrough here: nobody can publish, so no snippet says how
    assert "twine (~/.pypirc)" not in snippets and "uv publish" not in snippets
    ci = snippets["GitLab CI (.gitlab-ci.yml)"]
    assert f"PIP_INDEX_URL: {index}" in ci and "CI_JOB_TOKEN" not in ci
    assert TOKEN not in result.stdout


def test_pip_under_base_path_and_metrics_summed_over_workers(
    deployment: Deployment, tmp_path: Path
) -> None:
    before = _metrics(deployment.proxy.url)
    installed = pip_install(
        f"{deployment.root}simple/", tmp_path / "site", "app-main", home=tmp_path / "home"
    )
    assert installed.returncode == 0, installed.stderr
    sizes = [len(f.content) for f in deployment.double.files if f.project_id == 11]
    page = httpx2.get(f"{deployment.root}simple/app-dep/")
    link = re.search(r'href="([^"#]+)', page.text)
    assert link is not None
    again = httpx2.get(f"{deployment.root}simple/app-dep/{link.group(1)}")
    assert again.headers["x-cache"] == "HIT"
    after = _metrics(deployment.proxy.url)

    def delta(name: str, **labels: str) -> float:
        return _delta(before, after, name, **labels)

    prefix = "gitlab_pypi_proxy_"
    # pip's two wheels are misses, or hits when the look-ahead of their pages (app-dep's page is
    # warmed as app-main's dependency) kept them before pip asked; the last GET is a hit
    misses = delta(prefix + "cache_lookups_total", cache="file", outcome="miss")
    hits = delta(prefix + "cache_lookups_total", cache="file", outcome="hit")
    assert misses + hits == 3 and hits >= 1
    upstream = delta(prefix + "served_file_bytes_total", origin="upstream")
    cached = delta(prefix + "served_file_bytes_total", origin="cache")
    assert upstream + cached == sum(sizes) + len(again.content) and cached >= len(again.content)
    assert delta(prefix + "http_requests_total", route="distribution_file", status="200") == 3
    assert delta(prefix + "http_request_duration_seconds_count", route="distribution_file") == 3
    assert delta(prefix + "http_requests_total", route="project_page", status="200") >= 3
    assert delta(prefix + "upstream_requests_total", source="platform", outcome="2xx") >= 4
    assert after[(prefix + "file_cache_entries", ())] >= 2
    status = BeautifulSoup(httpx2.get(deployment.root).text, "html.parser")
    cells = {tr.th.get_text(): tr.td.get_text() for tr in status.find_all("tr") if tr.th and tr.td}
    assert re.fullmatch(r"\d+\.\d% \(\d+ of \d+\) since start", cells["File hit ratio"])
    assert cells["Files cached"].startswith(("2 ", "3 "))


def test_json_access_log_without_credentials(deployment: Deployment) -> None:
    secret = "s3cret-password-in-header"
    response = httpx2.get(
        f"{deployment.root}simple/app-main/?private_token=query-secret", auth=("carol", secret)
    )
    assert response.status_code == 200

    def line() -> dict | None:
        for text in deployment.proxy.log().splitlines():
            if text.startswith("{") and '"path": "/pypi/simple/app-main/"' in text:
                return json.loads(text)
        return None

    entry = wait_until(line, "the access log line")
    assert entry["logger"] == "proxy.access" and entry["method"] == "GET"
    assert entry["status"] == 200 and entry["bytes"] > 0 and entry["cache"] in ("OK", "STALE")
    assert entry["user"] == "-" and entry["client"] == "127.0.0.1"
    assert isinstance(entry["duration_ms"], float)
    log = deployment.proxy.log()
    assert secret not in log and "query-secret" not in log and TOKEN not in log


def test_health_readiness_and_forwarded_host(deployment: Deployment) -> None:
    for path in ("/healthz", "/pypi/healthz"):
        health = httpx2.get(deployment.proxy.url + path)
        assert (health.status_code, health.text) == (200, "ok\n")
    assert httpx2.get(f"{deployment.root}simple/app-main/").status_code == 200

    def ready_and_up() -> dict | None:
        body = httpx2.get(f"{deployment.root}readyz").json()
        return body if body["sources"]["platform"]["state"] == "up" else None

    body = wait_until(ready_and_up, "platform reported up by whichever worker answers")
    assert body["ready"] is True and body["mode"] == "online" and body["config"] == "loaded"
    behind = httpx2.get(
        deployment.root, headers={"x-forwarded-proto": "https", "x-forwarded-host": "pypi.acme.io"}
    )
    assert "index-url = https://pypi.acme.io/pypi/simple/" in behind.text
    bare = httpx2.get(f"{deployment.proxy.url}/pypi")
    assert bare.status_code == 301 and bare.headers["location"] == "pypi/"
    simple = httpx2.get(f"{deployment.root}simple")
    assert simple.status_code == 301 and simple.headers["location"] == "simple/"


def _readiness_of(tmp_path: Path, gitlab_url: str) -> tuple[ProxyProcess, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(
        tmp_path,
        gitlab_url,
        [{"name": "platform", "gitlab_project": 11}],
        token=TOKEN,
        cache={"warm_dependencies": False},  # counts GitLab calls: none but the ones it makes
    )
    return start_proxy(config), config


def test_ready_when_gitlab_is_down_only_if_the_cache_can_serve(tmp_path: Path) -> None:
    with serve(app_with_dependency(TOKEN).app) as server:
        proxy, _ = _readiness_of(tmp_path / "warm", server.url)
        empty = None
        try:
            assert httpx2.get(f"{proxy.url}/simple/app-main/").status_code == 200

            def exact_details() -> bool:
                page = httpx2.get(
                    f"{proxy.url}/simple/app-main/",
                    headers={"accept": "application/vnd.pypi.simple.v1+json"},
                ).json()
                return page["meta"]["api-version"] == "1.1"

            # the sizes are filled in in the background: done before GitLab goes away
            wait_until(exact_details, "app-main's exact PEP 700 details known")
            server.stop()
            # a name nothing warmed (app-dep, app-main's dependency, may have been)
            assert httpx2.get(f"{proxy.url}/simple/app-unseen/").status_code == 502
            ready = httpx2.get(f"{proxy.url}/readyz")
            body = ready.json()
            assert ready.status_code == 200 and body["ready"] is True
            assert body["sources"]["platform"]["state"] == "down"
            assert body["offline_serving_possible"] is True
            assert "serving from the cache" in body["mode"]
            assert (
                body["sources"]["platform"]["reason"]
                == f"connection refused by 127.0.0.1:{server.port}"
            )
            # one worker counts into the multiprocess files too, and its scrape reads them
            counted = _metrics(proxy.url)
            failed = ("gitlab_pypi_proxy_upstream_requests_total", "error", "platform")
            # one failed call: the simple page (the Packages API is asked only after a page that
            # lists files)
            assert counted[(failed[0], (("outcome", failed[1]), ("source", failed[2])))] == 1
            assert (
                _delta(
                    {},
                    counted,
                    "gitlab_pypi_proxy_cache_lookups_total",
                    cache="page",
                    outcome="miss",
                )
                >= 1
            )

            empty, _ = _readiness_of(tmp_path / "cold", server.url)
            assert httpx2.get(f"{empty.url}/simple/app-main/").status_code == 502
            cold = httpx2.get(f"{empty.url}/readyz")
            assert cold.status_code == 503 and cold.json()["ready"] is False
            assert "nothing is cached" in cold.json()["mode"]
        finally:
            proxy.stop()
            if empty is not None:
                empty.stop()


def test_graceful_shutdown_lets_a_download_finish(tmp_path: Path) -> None:
    big = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(1_000_000))  # 32 MB
    filename = "big_blob-1.0-py3-none-any.whl"
    with serve(app_with_dependency(TOKEN, ("big-blob", filename, big)).app) as server:
        proxy, _ = _readiness_of(tmp_path, server.url)
        try:
            page = httpx2.get(f"{proxy.url}/simple/big-blob/").text
            link = re.search(r'href="([^"#]+)', page)
            assert link is not None
            digest = hashlib.sha256()
            with httpx2.stream("GET", f"{proxy.url}/simple/big-blob/{link.group(1)}") as body:
                chunks = body.iter_bytes()
                digest.update(next(chunks))
                proxy.process.terminate()  # SIGTERM while most of the file is still to come
                for chunk in chunks:
                    digest.update(chunk)
            assert digest.hexdigest() == hashlib.sha256(big).hexdigest()
            # uvicorn re-raises SIGTERM once it has shut down cleanly: the status says "signal"
            assert proxy.process.wait(timeout=30) in (0, -15)
            assert "Application shutdown complete" in proxy.log()
        finally:
            proxy.stop()


REPLICA_USERS = f"""
[[users]]
name = "ci"
password = "{CI_PASSWORD}"
upload = ["platform"]
gitlab_token = "{DEPLOY_TOKEN}"
"""


def test_two_replicas_on_their_own_caches_answer_alike(tmp_path: Path) -> None:
    double = app_with_dependency(TOKEN)
    double.add_token(DEPLOY_TOKEN, write={11})
    with serve(double.app) as server:
        replicas = []
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                config = write_config(
                    tmp_path / name,
                    server.url,
                    [{"name": "platform", "gitlab_project": 11}],
                    token=TOKEN,
                    index_ttl=0,
                    extra=REPLICA_USERS,
                )
                replicas.append(start_proxy(config))
            a, b = (r.url for r in replicas)
            for accept in ("text/html", "application/vnd.pypi.simple.v1+json"):

                def alike(accept: str = accept) -> bool:
                    # each replica advertises a wheel's core metadata once its own background
                    # read of it has ended: the pages agree once both have
                    pages = [
                        httpx2.get(f"{u}/simple/app-main/", headers={"accept": accept})
                        for u in (a, b)
                    ]
                    return (pages[0].content, pages[0].headers["etag"]) == (
                        pages[1].content,
                        pages[1].headers["etag"],
                    )

                wait_until(alike, f"both replicas answering alike ({accept})")
            link = re.search(r'href="([^"#]+)', httpx2.get(f"{a}/simple/app-main/").text)
            assert link is not None
            from_b = httpx2.get(f"{b}/simple/app-main/{link.group(1)}")
            wanted = next(f for f in double.files if f.name == "app-main").content
            assert from_b.status_code == 200 and from_b.content == wanted
            # an upload through replica a reaches GitLab; every replica sees it within index_ttl
            filename, data = make_wheel("app-main", "1.1")
            (tmp_path / "dist").mkdir()
            (tmp_path / "dist" / filename).write_bytes(data)
            uploaded = twine_upload(
                f"{a}/upload/platform/",
                [tmp_path / "dist" / filename],
                user="ci",
                password=CI_PASSWORD,
                home=tmp_path / "home",
            )
            assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
            assert [f.filename for f in double.files].count(filename) == 1  # GitLab has it
            for url in (a, b):
                assert filename in httpx2.get(f"{url}/simple/app-main/").text
            link = re.search(
                rf'href="([^"#]+{re.escape(filename)})', httpx2.get(f"{b}/simple/app-main/").text
            )
            assert link is not None
            from_b = httpx2.get(f"{b}/simple/app-main/{link.group(1)}")
            assert from_b.status_code == 200 and from_b.content == data
        finally:
            for replica in replicas:
                replica.stop()
