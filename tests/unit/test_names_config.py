"""Name validation and configuration errors: one line, naming file and key, never a secret."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import ConfigError, load, parse_size
from gitlab_pypi_proxy.names import InvalidName, validate, validate_filename


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [("Acme.Utils", "acme-utils"), ("acme__utils", "acme-utils"), ("A", "a"), ("x-1", "x-1")],
)
def test_valid_names_normalize(raw: str, normalized: str) -> None:
    assert validate(raw) == normalized


@pytest.mark.parametrize("raw", ["-x", "x-", "a b", "..", "a/b", "é", "x" * 201, ""])
def test_invalid_names(raw: str) -> None:
    with pytest.raises(InvalidName):
        validate(raw)


@pytest.mark.parametrize("raw", ["..", "a/b", "a\\b", "a\x00b", ""])
def test_invalid_file_names(raw: str) -> None:
    with pytest.raises(InvalidName):
        validate_filename(raw)


def test_sizes() -> None:
    assert parse_size("20GiB") == 20 * 2**30
    assert parse_size("1.5 MB") == 1_500_000
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("lots")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return path


GOOD = """
[gitlab]
url = "https://gitlab.example.com/"
token = "${TEST_GITLAB_TOKEN}"
[[sources]]
name = "platform"
gitlab_project = "acme/platform"
[[sources]]
name = "acme"
gitlab_group = 7
"""


def test_good_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GITLAB_TOKEN", "glpat-secret")
    config = load(_write(tmp_path, GOOD))
    assert config.gitlab.url == "https://gitlab.example.com"
    assert config.gitlab.token == "glpat-secret"
    assert [(s.name, s.kind, s.target) for s in config.sources] == [
        ("platform", "gitlab_project", "acme/platform"),
        ("acme", "gitlab_group", "7"),
    ]
    assert config.upload.max_size == 3 * 2**30  # GitLab's default maximum file size
    sized = load(_write(tmp_path, GOOD + "[upload]\nmax_size = '2.5MiB'\n"))
    assert sized.upload.max_size == int(2.5 * 2**20)
    assert config.cache.directory == tmp_path / "cache"
    # the request budget is shared by every GitLab source; "not here" lasts index_ttl unless set
    assert (config.gitlab.max_requests_per_minute, config.cache.negative_ttl) == (1000, 300)
    tuned = load(
        _write(
            tmp_path,
            GOOD.replace("[gitlab]\n", "[gitlab]\nmax_requests_per_minute = 120\n")
            + "[cache]\nindex_ttl = 60\n",
        )
    )
    assert (tuned.gitlab.max_requests_per_minute, tuned.cache.negative_ttl) == (120, 60)
    longer = load(_write(tmp_path, GOOD + "[cache]\nnegative_ttl = 3600\n"))
    assert (longer.cache.index_ttl, longer.cache.negative_ttl) == (300, 3600)


def test_unset_optional_secret_means_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_GITLAB_TOKEN", raising=False)
    assert load(_write(tmp_path, GOOD)).gitlab.token is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cache]\nindex_ttl = 'soon'\n", "cache.index_ttl: expected an integer"),
        ("[cache]\nmax_size = 'lots'\n", "cache.max_size: not a size"),
        ("[cache]\nnegative_ttl = -1\n", "cache.negative_ttl: must be at least 0"),
        (
            "[gitlab]\nurl='https://g'\nmax_requests_per_minute = 0\n",
            "gitlab.max_requests_per_minute: must be at least 1",
        ),
        ("[upload]\nmax_size = true\n", "upload.max_size: expected a size such as 3GiB"),
        ("[upload]\nmax_size = '10B'\n", "upload.max_size: must be at least 1024 bytes"),
        ("[server]\nport = 70000\n", "server.port: must be at most 65535"),
        ("[[sources]]\nname = 'x'\ngitlab_project = 'a/b'\n", "gitlab.url: required"),
        (
            "[gitlab]\nurl='https://g'\n[[sources]]\nname='x'\n",
            "sources[0].name: source 'x' needs exactly one of",
        ),
        (
            "[gitlab]\nurl='https://g'\n[[sources]]\nname='x'\ngitlab_project='a'\n"
            "[[sources]]\nname='x'\ngitlab_group='b'\n",
            "sources: two sources are named 'x'",
        ),
        ("[gitlab]\nurl = 'ftp://g'\n", "gitlab.url: expected an http(s) URL"),
        ("[gitlab]\nurl='https://g'\nusername='${UNSET_FOR_TEST}'\n", "UNSET_FOR_TEST is not set"),
        ("[serverr]\n", "serverr: unknown key"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_cli_bad_config_exits_2_with_one_line_and_no_secret(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[gitlab]\nurl='https://g'\ntoken='glpat-very-secret'\n[[sources]]\nname='x'\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "gitlab_pypi_proxy", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert str(path) in result.stderr
    assert "glpat-very-secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_check_config_lists_sources(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "gitlab_pypi_proxy", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "TEST_GITLAB_TOKEN": "glpat-secret"},
    )
    assert "source 1: platform = gitlab_project acme/platform" in result.stdout
    assert "source 2: acme = gitlab_group 7" in result.stdout
    assert "glpat-secret" not in result.stdout


_SOURCE = "[gitlab]\nurl = 'https://g'\n[[sources]]\nname = 'platform'\ngitlab_project = 'a/b'\n"


@pytest.mark.parametrize(
    ("yanked", "message"),
    [
        ("'1.0'", "sources[0].yanked: expected a table"),
        ("{ 'bad name!' = ['1.0'] }", "sources[0].yanked.bad name!: not a valid project name"),
        ("{ acme = '1.0' }", "sources[0].yanked.acme: expected a list of strings"),
        ("{ acme = [1.0] }", "sources[0].yanked.acme: expected a list of strings"),
    ],
)
def test_a_bad_yanked_entry_is_named_under_its_own_key(
    tmp_path: Path, yanked: str, message: str
) -> None:
    """A bad name was reported under `allow_public`, and a value that is no list was dropped."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(_write(tmp_path, f"{_SOURCE}yanked = {yanked}\n"))


def test_yanked_versions_are_read_by_normalized_name(tmp_path: Path) -> None:
    config = load(_write(tmp_path, f"{_SOURCE}yanked = {{ 'Acme.Utils' = ['1.0', '1.1'] }}\n"))
    assert config.sources[0].yanked == {"acme-utils": frozenset({"1.0", "1.1"})}
