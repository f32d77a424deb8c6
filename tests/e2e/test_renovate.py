"""The real Renovate (tests/tool_venvs.py) finds a newer release through the proxy's JSON API.

Renovate reads `<registryUrl><name>/json` when its registry URL does not end in `/simple/`; the
proxy asks for credentials (as a private index does) and Renovate sends the host rule's. One
run, a dry run with lookup of a requirements file on the local platform: it must find 1.1 with
the time GitLab says it was uploaded, and its source URL from the release's METADATA.
"""

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gitlab_pypi_proxy.demo.dists import make_sdist, make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.proxy_process import start_proxy, write_config
from tests.servers import serve
from tests.tool_venvs import renovate_command

TOKEN = "glpat-renovate-proxy"
PASSWORD = "renovate-bot-password"
USERS = f"""
[auth]
anonymous_read = false

[[users]]
name = "renovate"
password = "{PASSWORD}"
read = ["platform"]
"""
RELEASED = {
    "1.0": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "1.1": datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC),
}
_RENOVATE_SECONDS = 300


@pytest.fixture(scope="session")
def renovate() -> list[str]:
    """The pinned Renovate, installed on first use on this machine (.ci/run installs it ahead)."""
    return renovate_command()


def _log(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_renovate_finds_the_newer_release_and_its_time_through_the_json_api(
    tmp_path: Path, renovate: list[str]
) -> None:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token(TOKEN, read={11})
    source = ["Summary: Acme core", "Project-URL: Source, https://github.com/acme/core"]
    for version, uploaded in RELEASED.items():
        wheel = make_wheel("acme-core", version, fields=source)
        double.add_package_file(11, "acme-core", version, *wheel, created_at=uploaded)
    double.add_package_file(
        11, "acme-core", "1.0", *make_sdist("acme-core", "1.0"), created_at=RELEASED["1.0"]
    )
    with serve(double.app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(tmp_path, server.url, sources, token=TOKEN, extra=USERS)
        proxy = start_proxy(config)
        try:
            repo = tmp_path / "repo"
            repo.mkdir()
            (repo / "requirements.txt").write_text("acme-core==1.0\n")
            rules = [{"matchDatasources": ["pypi"], "registryUrls": [f"{proxy.url}/pypi/"]}]
            (repo / "renovate.json").write_text(json.dumps({"packageRules": rules}))
            host = {"matchHost": proxy.url, "username": "renovate", "password": PASSWORD}
            env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # loopback
            env |= {
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "debug",
                "RENOVATE_BASE_DIR": str(tmp_path / "renovate"),
                "RENOVATE_HOST_RULES": json.dumps([host]),
            }
            run = subprocess.run(
                [*renovate, "--platform=local", "--dry-run=lookup", "--require-config=optional"],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=_RENOVATE_SECONDS,
                check=False,
            )
            log = proxy.log()
        finally:
            proxy.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    found = [e for e in _log(run.stdout) if e.get("msg") == "packageFiles with updates"]
    assert found, run.stdout[-4000:]
    (requirements,) = found[-1]["config"]["pip_requirements"]
    (dep,) = requirements["deps"]
    assert (dep["depName"], dep["currentVersion"]) == ("acme-core", "1.0")
    assert dep["currentVersionTimestamp"] == "2024-01-02T03:04:05.000Z"
    assert dep["sourceUrl"] == "https://github.com/acme/core"  # from 1.1's METADATA
    (update,) = dep["updates"]
    assert (update["newVersion"], update["releaseTimestamp"]) == ("1.1", "2024-03-04T05:06:07.000Z")
    # it asked the JSON API, with the host rule's credentials, and nothing else of the index
    assert 'renovate "GET /pypi/acme-core/json" 200' in log
    assert "/simple/" not in log
    assert PASSWORD not in log
