"""The status page: the state /readyz answers, what the proxy runs with, each source's target and
figures, every value escaped, and client settings that follow the configuration."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from gitlab_pypi_proxy import __version__, metrics, processes
from gitlab_pypi_proxy.http.status_page import Section, Usage, render, snippets
from gitlab_pypi_proxy.index.shadows import ShadowedNames
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.uploads import KEEP, RecentUploads, Upload
from gitlab_pypi_proxy.supervisor import PID_ENV
from tests.unit.asgi import running_app

TOKEN = "glpat-status-page-token"


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[cache]\ndirectory = "{tmp_path / "cache"}"\n'
        f'[gitlab]\nurl = "https://gitlab.example.com"\ntoken = "{TOKEN}"\n'
        '[[sources]]\nname = "status-only"\ngitlab_project = "acme/<script>x</script>"\n' + extra
    )
    return path


async def _page(path: Path) -> tuple[str, dict]:
    async with running_app(path) as client:
        page = (await client.get("/")).text
        ready = (await client.get("/readyz")).json()
    return page, ready


async def test_the_page_says_what_the_proxy_runs_with(tmp_path: Path) -> None:
    users = (
        '[[users]]\nname = "ci"\npassword = "pw"\nupload = ["status-only"]\ngitlab_token = "t"\n'
    )
    html, ready = await _page(_config(tmp_path, users))
    page = BeautifulSoup(html, "html.parser")
    text = page.get_text(" ", strip=True)
    assert [h.get_text() for h in page.find_all("h2")] == [
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
    assert ready["ready"] is True and ready["mode"] == "online"
    assert "State: ready (online)" in text
    rows = {
        tr.find("th").get_text(): tr.find("td").get_text()
        for tr in page.find_all("tr")
        if tr.find("th") and tr.find("td")
    }
    assert rows["Version"] == __version__
    assert rows["Configuration"] == str((tmp_path / "proxy.toml").resolve())
    assert rows["Access"] == "anonymous read, 1 user"
    assert rows["Up for"].endswith("min")
    # this process's count: other tests evict too
    evicted = metrics.registry().get_sample_value(metrics.PREFIX + "cache_evictions_total")
    assert rows["Evictions"] == f"{evicted:.0f} files since start"
    cells = [[td.get_text() for td in tr.find_all("td")] for tr in page.find_all("tr")]
    platform = next(row for row in cells if row and row[0] == "status-only")
    assert platform[1:5] == [
        "gitlab_project",
        "https://gitlab.example.com project acme/<script>x</script>",
        "token set",
        "unknown",
    ]
    assert platform[7:] == ["no calls yet", "0"]
    heads = [th.get_text() for th in page.find_all("th")]
    assert "Mean latency since start" in heads and "Errors since start" in heads
    assert rows["File hit ratio"].endswith("since start")  # other tests count in this process
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert re.search(r"Failed uploads since start: \d+", text)
    assert TOKEN not in html
    titles = [h.get_text() for h in page.find_all("h3")]
    assert "twine (~/.pypirc)" in titles and "uv publish" in titles
    ci = page.find("h3", string="GitLab CI (.gitlab-ci.yml)").find_next("pre").get_text()
    assert "CI_JOB_TOKEN" not in ci and "gitlab-ci-token" not in ci  # passthrough is off
    assert "TWINE_PASSWORD: $PYPI_PROXY_PASSWORD" in ci


async def test_the_state_is_the_one_readyz_answers(tmp_path: Path) -> None:
    offline = _config(tmp_path, "").read_text().replace("[gitlab]", "offline = true\n[gitlab]")
    (tmp_path / "proxy.toml").write_text(offline)
    html, ready = await _page(tmp_path / "proxy.toml")
    assert ready["ready"] is False  # offline with nothing cached
    text = BeautifulSoup(html, "html.parser").get_text(" ", strip=True)
    assert f"State: not ready ({ready['mode']})" in text


def test_snippets_follow_the_configuration() -> None:
    base = "http://10.0.0.5:8080/"
    reading = dict(snippets(base, Usage(uploads=False)))
    assert "twine (~/.pypirc)" not in reading and "uv publish" not in reading
    assert "publish" not in reading["GitLab CI (.gitlab-ci.yml)"]
    assert "publish-url" not in reading["uv.toml (or [tool.uv] in pyproject.toml)"]
    assert "trusted-host = 10.0.0.5" in reading["pip.conf (or PIP_INDEX_URL)"]
    assert 'url = "http://10.0.0.5:8080/simple/"' in reading["pdm (pyproject.toml)"]
    passthrough = dict(snippets(base, Usage(passthrough=True)))
    assert "TWINE_PASSWORD: $CI_JOB_TOKEN" in passthrough["GitLab CI (.gitlab-ci.yml)"]
    assert (
        "uv publish --publish-url http://10.0.0.5:8080/upload/ --check-url "
        in (passthrough["uv publish"])
    )
    assert (
        "pdm publish --repository http://10.0.0.5:8080/upload/"
        in (passthrough["pdm (pyproject.toml)"])
    )
    private = dict(snippets(base, Usage(private_reads=True)))
    assert "machine 10.0.0.5 login" in private["pip.conf (or PIP_INDEX_URL)"]


def test_render_escapes_titles_and_masks_the_base() -> None:
    html = render("http://u:pw@proxy.example/", [Section("<b>", "<p>ok</p>")])
    assert "&lt;b&gt;" in html and "<p>ok</p>" in html
    assert "pw@" not in html and "http://***@proxy.example/simple/" in html


async def test_recent_uploads_keep_the_newest_for_the_status_page(tmp_path: Path) -> None:
    uploads = RecentUploads(tmp_path)
    for number in range(KEEP + 5):
        await uploads.record(Upload(f"pkg-{number}.whl", "platform", "ci", at=1000.0 + number))
    again = RecentUploads(tmp_path)  # another worker over the same directory
    latest = await again.latest()
    assert [u.filename for u in latest[:2]] == [f"pkg-{KEEP + 4}.whl", f"pkg-{KEEP + 3}.whl"]
    assert len(latest) == KEEP
    uploads.close()
    again.close()


async def test_the_page_lists_the_views_with_their_urls_and_the_shadowed_names(
    tmp_path: Path,
) -> None:
    views = (
        '[[sources]]\nname = "ml"\ngitlab_project = 12\n'
        '[[views]]\nname = "release"\nsources = ["ml", "status-only"]\n'
    )
    path = _config(tmp_path, views)
    await ShadowedNames(LocalCoordinator(tmp_path / "cache")).add("acme-core", "pypi")
    html, _ = await _page(path)
    page = BeautifulSoup(html, "html.parser")
    section = page.find("h2", string="Views").find_next("table")
    cells = [[td.get_text() for td in tr.find_all("td")] for tr in section.find_all("tr")[1:]]
    assert cells == [["release", "http://proxy/release/simple/", "ml, status-only"]]
    shadows = page.find("h2", string="Private names also on a public index").find_next("ul")
    assert shadows.get_text(" ", strip=True).startswith("acme-core on pypi, seen ")
    workers = page.find("h2", string="Workers").find_next("table")
    cells = [[td.get_text() for td in tr.find_all("td")] for tr in workers.find_all("tr")[1:]]
    assert cells[0][:2] == ["worker (answered this page)", str(os.getpid())]
    assert cells[0][2].endswith("iB")  # its resident memory, from /proc


def test_the_workers_are_the_supervisors_children_with_their_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert child.pid in processes.children(os.getpid())
        memory = processes.resident(child.pid)
        assert memory is not None and memory > 2**20
        # this process as a worker of its parent, the supervisor
        monkeypatch.setenv(PID_ENV, str(os.getppid()))
        found = processes.serving()
        assert found[0].pid == os.getppid() and found[0].role == "supervisor"
        (me,) = [p for p in found if p.this]
        assert (me.pid, me.role) == (os.getpid(), "worker")
        assert me.rss is not None and me.rss > 2**20
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=10)
    assert processes.resident(child.pid) is None
