"""Prefetch by package and by whole source, its failures, and the server's hit ratio in stats."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.e2e.test_prefetch import GITLAB_SOURCES, TOKEN, _double, cache_cli, prefetch
from tests.proxy_process import start_proxy, write_config
from tests.servers import Server, serve


@pytest.fixture
def gitlab(tmp_path: Path) -> Iterator[tuple[GitLabDouble, Server, Path]]:
    double = _double()
    with serve(double.app) as server:
        yield double, server, write_config(tmp_path, server.url, GITLAB_SOURCES, token=TOKEN)


def _fetched(stdout: str) -> set[str]:
    return {line.split()[1] for line in stdout.splitlines() if line.startswith("fetched ")}


def test_package_with_and_without_a_version(gitlab) -> None:
    _, _, config = gitlab
    result = prefetch(config, "--package", "app-dep==2.0", "--package", "Tool_X")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _fetched(result.stdout) == {
        "app_dep-2.0-py3-none-any.whl",
        "app_dep-2.0.tar.gz",
        "tool_x-1.0-py3-none-any.whl",
        "tool_x-1.1-py3-none-any.whl",
    }
    assert result.stdout.rstrip().endswith("offline-complete: yes")


def test_whole_source_latest_version_of_each_name(gitlab) -> None:
    double, _, config = gitlab
    result = prefetch(config, "--source", "tools", "--latest", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _fetched(result.stdout) == {
        "tool_x-1.1-py3-none-any.whl",
        "unrelated-3.0-py3-none-any.whl",
    }
    assert double.count("GET", "/api/v4/projects/12/packages") >= 1  # the Packages API listed them


def test_whole_source_walks_every_page_of_the_packages_api(gitlab) -> None:
    double, _, config = gitlab
    for number in range(105):  # more than one page of 100
        filename, data = make_wheel(f"many-{number}", "1.0")
        double.add_package_file(12, f"many-{number}", "1.0", filename, data)
    result = prefetch(config, "--source", "tools", "--jobs", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetched: 108 (" in result.stdout  # 105 + tool-x 1.0 and 1.1 + unrelated


def test_missing_and_corrupt_files_are_named_and_the_answer_is_no(gitlab, tmp_path: Path) -> None:
    double, _, config = gitlab
    filename, good = make_wheel("app-dep", "2.0")
    double.replace_content(11, filename, good[:-1] + b"!")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        f"app-dep==2.0 --hash=sha256:{hashlib.sha256(good).hexdigest()}\n"
        f"app-main==1.0 --hash=sha256:{'0' * 64}\n"
        "no-such-thing==1.0\n"
    )
    result = prefetch(config, "-r", str(requirements))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"  {filename}: sha256 mismatch: content hashes to" in result.stdout
    assert any(line.startswith("  app-main (sha256 000000000000") for line in lines)
    assert "  no-such-thing==1.0: no source has a project named no-such-thing" in lines
    assert lines[-1] == "offline-complete: no (3 missing)"


def test_a_bad_requirements_file_is_one_line_and_exit_2(gitlab, tmp_path: Path) -> None:
    _, _, config = gitlab
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("ok==1.0\nthis is not ( a requirement\n")
    result = prefetch(config, "-r", str(requirements))
    assert result.returncode == 2
    assert result.stderr.startswith("gitlab-pypi-proxy: requirements.txt:2: not a requirement")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_stats_counts_the_servers_hits_and_misses(gitlab) -> None:
    _, _, config = gitlab
    filename, data = make_wheel("tool-x", "1.1")
    sha = hashlib.sha256(data).hexdigest()
    proxy = start_proxy(config)
    try:
        for _ in range(3):  # one miss (downloaded), then two hits
            response = httpx2.get(f"{proxy.url}/files/{sha}/{filename}")
            assert response.status_code == 200
    finally:
        proxy.stop()
    assert cache_cli(config, "verify").returncode == 0  # the command line does not count
    stats = cache_cli(config, "stats")
    assert stats.returncode == 0, stats.stderr
    assert "hit ratio: 66.7% (2 hits, 1 misses" in stats.stdout
    assert "files: 1 entries" in stats.stdout


def test_prefetch_while_the_server_runs_serves_its_files_as_hits(gitlab) -> None:
    _, _, config = gitlab
    proxy = start_proxy(config)
    try:
        assert httpx2.get(f"{proxy.url}/simple/tool-x/").status_code == 200
        result = prefetch(config, "--package", "tool-x==1.1")
        assert result.returncode == 0, result.stdout + result.stderr
        filename, data = make_wheel("tool-x", "1.1")
        response = httpx2.get(f"{proxy.url}/files/{hashlib.sha256(data).hexdigest()}/{filename}")
        assert response.headers["x-cache"] == "HIT"
        assert response.content == data
    finally:
        proxy.stop()


def test_an_unreachable_source_is_a_failure_not_a_traceback(gitlab) -> None:
    double, _, config = gitlab
    double.down_status = 503
    result = prefetch(config, "--source", "tools", "--package", "app-main")
    assert result.returncode == 1
    assert "  --source tools: upstream tools unavailable: HTTP 503" in result.stdout
    assert "  app-main: upstream platform unavailable: HTTP 503" in result.stdout
    assert result.stdout.splitlines()[-1] == "offline-complete: no (2 missing)"
    assert "Traceback" not in result.stderr


def test_prefetch_refuses_an_offline_configuration(gitlab) -> None:
    _, _, config = gitlab
    config.write_text(config.read_text().replace("offline = false", "offline = true"))
    result = prefetch(config, "--package", "app-main")
    assert result.returncode == 2
    assert "cache.offline: prefetch needs the upstreams" in result.stderr


def test_a_source_the_token_cannot_list_is_a_failure_not_an_empty_success(
    gitlab, tmp_path: Path
) -> None:
    double, server, _ = gitlab
    double.add_token("glpat-platform-only", read={11})  # no access to project 12 (tools)
    config = write_config(tmp_path, server.url, GITLAB_SOURCES, token="glpat-platform-only")
    result = prefetch(config, "--source", "tools", "--source", "platform")
    assert result.returncode == 1
    assert (
        "  --source tools: source tools: the Packages API answered HTTP 404 (the token needs "
        "the read_api scope and read access to the project or group)"
    ) in result.stdout.splitlines()
    assert "fetched: 3 (" in result.stdout  # platform still listed: app-main, app-dep x2
    assert result.stdout.splitlines()[-1] == "offline-complete: no (1 missing)"
    assert "glpat-platform-only" not in result.stdout + result.stderr
