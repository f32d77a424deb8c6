"""The Grafana dashboard in deploy/grafana against a running proxy: every metric, label and value
its queries ask for is one that /metrics exposes once the proxy has served a page, a file (from
upstream, then from the cache) and an upload; every metric /metrics exposes has a panel; and a
dashboard with a misspelt metric is caught."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.dashboards import exposed, problems, queries, wants
from tests.proxy_process import start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until
from tests.worlds import UPLOADER_CONFIG, app_taking_uploads, pinned_url, upload_wheel

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "gitlab-pypi-proxy.json"
TOKEN = "glpat-dashboard-reader"
_P = "gitlab_pypi_proxy_"


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a proxy that has served the index, a page, a file twice and an upload."""
    double = app_taking_uploads(TOKEN)
    directory = tmp_path_factory.mktemp("dashboard")
    with serve(double.app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(directory, server.url, sources, token=TOKEN, extra=UPLOADER_CONFIG)
        proxy = start_proxy(config)
        try:
            # first: app-main's page warms its dependency app-dep, whose wheel is then read
            file_url = pinned_url(proxy.url, double, "app-dep")
            caches = [httpx2.get(file_url).headers["x-cache"] for _ in range(2)]
            assert caches == ["MISS", "HIT"]
            assert httpx2.get(f"{proxy.url}/simple/").status_code == 200
            page = httpx2.get(f"{proxy.url}/simple/app-main/")
            assert page.status_code == 200
            _, answer = upload_wheel(proxy.url, "dashboard-pkg", "1.0")
            assert answer.status_code == 201, answer.text

            def counted() -> str | None:
                # the access log counts a request once its answer is sent: wait for the last ones
                text = httpx2.get(f"{proxy.url}/metrics").text
                samples = exposed(text)
                origins = samples.get(_P + "served_file_bytes_total", {}).get("origin", set())
                routes = samples.get(_P + "http_requests_total", {}).get("route", set())
                return text if origins >= {"cache", "upstream"} and "upload" in routes else None

            yield wait_until(counted, "the file bytes and the upload counted")
        finally:
            proxy.stop()


def test_every_query_asks_for_what_metrics_exposes(scrape: str) -> None:
    dashboard = _dashboard()
    assert len(queries(dashboard)) >= 20
    assert problems(dashboard, scrape) == []


def test_every_exposed_metric_has_a_panel(scrape: str) -> None:
    """A metric added to gitlab_pypi_proxy/metrics.py without a panel fails here: add one."""
    queried = set().union(*(wants(q).metrics for q in queries(_dashboard())))
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exposed(scrape)}
    unshown = {
        family
        for family in families
        if not any(re.fullmatch(rf"{family}(_total|_bucket|_count|_sum)?", q) for q in queried)
    }
    assert unshown == set()


def _queried_metrics() -> list[str]:
    return sorted(set().union(*(wants(q).metrics for q in queries(_dashboard()))))


@pytest.mark.parametrize("metric", _queried_metrics())
def test_a_misspelt_metric_is_caught(scrape: str, metric: str) -> None:
    misspelt = metric.replace("_", "", 1)  # gitlab_pypi_... → gitlabpypi_...
    text = DASHBOARD.read_text()
    broken = json.loads(re.sub(rf"\b{metric}\b", misspelt, text, count=1))
    found = problems(broken, scrape)
    assert any(f"queries {misspelt}, which is not exposed" in p for p in found), found


def test_a_misspelt_label_or_value_is_caught(scrape: str) -> None:
    text = DASHBOARD.read_text()
    for good, bad, problem in [
        ('cache=\\"page\\"', 'cache=\\"pages\\"', "never has cache='pages'"),
        ("by (origin)", "by (origins)", "groups by origins"),
        ('outcome=~\\"5xx', 'outcom=~\\"5xx', "has no label outcom"),
    ]:
        assert good in text, good
        found = problems(json.loads(text.replace(good, bad, 1)), scrape)
        assert len(found) == 1 and problem in found[0], found


def test_the_panels_fit_the_grid_and_use_the_chosen_datasource() -> None:
    dashboard = _dashboard()
    panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
