"""Diagnosis: a source that goes down or comes back is one warning in the log (per
change, not per request) naming the source, its host and port and the reason; /readyz and the
status page say the same reason; a token GitLab refuses is named as such, never shown."""

import re
from pathlib import Path

import httpx2

from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until
from tests.worlds import app_with_dependency

TOKEN = "glpat-diagnosis-reader"


def _proxy(tmp_path: Path, url: str, token: str, *args: str) -> ProxyProcess:
    sources = [{"name": "platform", "gitlab_project": 11}]
    return start_proxy(write_config(tmp_path, url, sources, token=token), *args)


def _lines(proxy: ProxyProcess, pattern: str) -> list[str]:
    return [line for line in proxy.log().splitlines() if re.search(pattern, line)]


def test_each_change_of_a_sources_state_is_one_warning_with_host_and_reason(
    tmp_path: Path,
) -> None:
    double: GitLabDouble = app_with_dependency(TOKEN)
    with serve(double.app) as server:
        host = f"127.0.0.1:{server.port}"
        # two workers: whichever sees a change first logs it, the other one stays quiet
        proxy = _proxy(tmp_path, server.url, TOKEN, "--workers", "2")

        def changes() -> list[str]:
            return _lines(proxy, r"source platform is (down|up)")

        try:
            assert httpx2.get(f"{proxy.url}/simple/app-main/").status_code == 200
            wait_until(lambda: len(changes()) == 1, "the first answer logged")
            double.down_status = 503
            for name in ("first-missing", "second-missing", "third-missing", "more-missing"):
                answer = httpx2.get(f"{proxy.url}/simple/{name}/")
                assert answer.status_code == 502 and "platform" in answer.text
            wait_until(lambda: len(changes()) == 2, "the outage logged")
            double.down_status = None
            for name in ("app-dep", "fourth-missing", "app-main"):
                assert httpx2.get(f"{proxy.url}/simple/{name}/").status_code in (200, 404)
            wait_until(lambda: len(changes()) == 3, "the return logged")
            server.stop()
            for name in ("fifth-missing", "sixth-missing", "seventh-missing"):
                answer = httpx2.get(f"{proxy.url}/simple/{name}/")
                assert answer.status_code == 502
                assert f"connection refused by {host}" in answer.text
            wait_until(lambda: len(changes()) >= 4, "four state changes logged")
            lines = changes()
            assert len(lines) == 4, lines
            assert "INFO" in lines[0] and f"source platform is up: {host} answers" in lines[0]
            assert "WARNING" in lines[1]
            assert f"source platform is down: HTTP 503 from {host}" in lines[1]
            assert "WARNING" in lines[2]
            assert f"source platform is up again: {host} answers" in lines[2]
            assert "WARNING" in lines[3]
            assert f"source platform is down: connection refused by {host}" in lines[3]

            def readiness_naming_the_outage() -> dict | None:
                # the other worker may answer: it reads this one's view, written in the background
                ready = httpx2.get(f"{proxy.url}/readyz").json()["sources"]["platform"]
                return ready if ready["state"] == "down" else None

            ready = wait_until(readiness_naming_the_outage, "/readyz to name the outage")
            assert ready["reason"] == f"connection refused by {host}"
            assert ready["upstream"] == host

            def page_naming_the_outage() -> str | None:
                # the other worker may answer: it reads this one's view, written in the background
                text = httpx2.get(f"{proxy.url}/").text
                return text if f"connection refused by {host}" in text else None

            wait_until(page_naming_the_outage, "the status page to name the outage")

            def agreeing() -> bool:
                # app-main's page is cached: what readyz answers, the page says. Both read the
                # workers' shared view, a request each: asked again if it changed in between
                # (an answer recorded late by the other worker, say).
                mode = httpx2.get(f"{proxy.url}/readyz").json()["mode"]
                shown = 'State: <strong class="degraded">' in httpx2.get(f"{proxy.url}/").text
                return mode.startswith("degraded") == shown

            wait_until(agreeing, "readyz and the status page to agree")
        finally:
            proxy.stop()


def test_a_token_gitlab_refuses_is_named_and_never_shown(tmp_path: Path) -> None:
    wrong = "glpat-revoked-long-ago"
    with serve(app_with_dependency(TOKEN).app) as server:
        host = f"127.0.0.1:{server.port}"
        proxy = _proxy(tmp_path, server.url, wrong)
        try:
            reason = (
                f"HTTP 401 from {host}: GitLab refused the proxy's [gitlab] token "
                "(wrong, expired or revoked)"
            )
            for _ in range(3):  # the client is told why, never "no such project"
                answer = httpx2.get(f"{proxy.url}/simple/app-main/")
                assert answer.status_code == 502
                assert answer.text == f"upstream platform unavailable: {reason}\n"
            wait_until(lambda: _lines(proxy, "source platform is down"), "the warning")
            lines = _lines(proxy, "source platform is")
            assert len(lines) == 1 and lines[0].endswith(f"source platform is down: {reason}")
            ready = httpx2.get(f"{proxy.url}/readyz").json()["sources"]["platform"]
            assert (ready["state"], ready["reason"]) == ("down", reason)
            page = httpx2.get(f"{proxy.url}/").text
            readyz = httpx2.get(f"{proxy.url}/readyz")
            mode = readyz.json()["mode"]
            assert readyz.status_code == 503
            assert mode == "not ready: platform unreachable and nothing is cached"
            assert f'State: <strong class="not-ready">not ready</strong> ({mode})' in page
            assert "GitLab refused the proxy&#x27;s [gitlab] token" in page
            assert wrong not in proxy.log() and wrong not in page
        finally:
            proxy.stop()
