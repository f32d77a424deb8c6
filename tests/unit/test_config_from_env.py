"""Every command takes its configuration from --config or, without it, from the environment's
GITLAB_PYPI_PROXY_CONFIG (what the container image sets); --config wins; neither is one line."""

from pathlib import Path

import pytest

from gitlab_pypi_proxy import cli

COMMANDS = [
    ["serve"],
    ["check-config"],
    ["cache", "stats"],
    ["cache", "verify"],
    ["cache", "export", "bundle.tar"],
    ["cache", "import", "bundle.tar"],
    ["prefetch", "--package", "acme-tool"],
    ["audit", "--package", "acme-tool"],
]


def _good(tmp_path: Path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text(
        f'[cache]\ndirectory = "{tmp_path / "cache"}"\n'
        '[[sources]]\nname = "public"\nurl = "https://pypi.example/simple/"\n'
    )
    return path


def _bad(tmp_path: Path) -> Path:
    """A configuration every command refuses while reading it, naming its own path."""
    path = tmp_path / "from-env.toml"
    path.write_text('[server]\nport = "eighty"\n')
    return path


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_reads_the_file_the_environment_names(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(cli.CONFIG_ENV, str(_bad(tmp_path)))
    assert cli.main(command) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"gitlab-pypi-proxy: {tmp_path / 'from-env.toml'}: server.port")
    assert error.count("\n") == 1


def test_check_config_from_the_environment_and_config_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _good(tmp_path)
    monkeypatch.setenv(cli.CONFIG_ENV, str(good))
    assert cli.main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith(f"config {good}: OK")
    monkeypatch.setenv(cli.CONFIG_ENV, str(_bad(tmp_path)))
    assert cli.main(["check-config", "--config", str(good)]) == 0  # --config wins
    assert capsys.readouterr().out.startswith(f"config {good}: OK")


@pytest.mark.parametrize("value", [None, "", "  "])
def test_neither_is_one_line_and_exit_2(
    value: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if value is None:
        monkeypatch.delenv(cli.CONFIG_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.CONFIG_ENV, value)
    assert cli.main(["cache", "stats"]) == 2
    assert capsys.readouterr().err == (
        "gitlab-pypi-proxy: no configuration: give --config FILE or set GITLAB_PYPI_PROXY_CONFIG\n"
    )


def test_the_help_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["prefetch", "--help"])
    assert "$GITLAB_PYPI_PROXY_CONFIG" in capsys.readouterr().out
