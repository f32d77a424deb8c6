"""`gitlab-pypi-proxy --version` and what `--help` tells a user first."""

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from gitlab_pypi_proxy import cli


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"gitlab-pypi-proxy {version('gitlab-pypi-proxy')}\n"


def test_version_from_the_installed_script() -> None:
    """The console script users run, not only the function: the same line, exit 0."""
    script = Path(sys.executable).with_name("gitlab-pypi-proxy")
    assert script.exists() or shutil.which("gitlab-pypi-proxy"), "the package is not installed"
    command = str(script) if script.exists() else "gitlab-pypi-proxy"
    result = subprocess.run([command, "--version"], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"gitlab-pypi-proxy {version('gitlab-pypi-proxy')}\n"


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    with pytest.raises(SystemExit) as stop:
        cli.main([*args, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out.splitlines()


def test_help_says_what_the_product_is_right_after_the_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = _help(capsys)
    assert lines[0].startswith("usage: gitlab-pypi-proxy")
    # argparse wraps the usage over lines; the first paragraph after it is the description
    first = lines[lines.index("") + 1]
    assert first.startswith("A PyPI proxy and offline cache in front of GitLab")
    text = "\n".join(lines)
    assert "The command line" not in text  # the cli module's own docstring, meant for developers
    assert "--version" in text
    assert "serve" in text and "check-config" in text and "prefetch" in text


def test_a_commands_help_still_describes_that_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "\n".join(_help(capsys, "serve"))
    assert "usage: gitlab-pypi-proxy serve" in text and "--config" in text
