"""[policy], [audit] and the sources' include/exclude as the configuration file reads them."""

from datetime import timedelta
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import ConfigError, load

SOURCES = """
[gitlab]
url = "https://gitlab.example.com"
[[sources]]
name = "private"
gitlab_project = "acme/pkgs"
[[sources]]
name = "public"
url = "https://pypi.org/simple/"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(f'[cache]\ndirectory = "{tmp_path / "cache"}"\n' + text)
    return path


def test_the_issues_names_are_read(tmp_path: Path) -> None:
    (tmp_path / "osv-PyPI.zip").write_bytes(b"PK")
    config = load(
        _write(
            tmp_path,
            SOURCES
            + 'include = ["numpy", "django*"]\nexclude = ["acme-*"]\n'
            + '[policy]\nmin_age = "7d"\nmin_age_sources = ["public"]\nexempt = ["certifi"]\n'
            + 'unknown_age = "hold"\nvulnerabilities = "./osv-PyPI.zip"\nvulnerable = "hide"\n'
            + 'held = "hide"\n'
            + '[audit]\npath = "./audit.jsonl"\n',
        )
    )
    policy = config.guard.policy
    assert policy.min_age == timedelta(days=7)
    assert policy.min_age_sources == {"public"}
    assert policy.unknown_age == "hold" and policy.vulnerable == "hide"
    assert policy.held == "hide"
    assert policy.vulnerabilities == tmp_path / "osv-PyPI.zip"
    assert [g.pattern for g in policy.rules_for("public").exclude] == ["acme-*"]
    assert config.guard.audit.path == tmp_path / "audit.jsonl"


def test_without_a_policy_table_nothing_is_held_and_the_trail_is_in_the_cache(
    tmp_path: Path,
) -> None:
    config = load(_write(tmp_path, SOURCES))
    assert config.guard.policy.min_age == timedelta(0)
    assert config.guard.policy.vulnerable == "yank"
    assert config.guard.policy.held == "yank"
    assert config.guard.policy.unknown_age == "allow"
    assert config.guard.audit.path == tmp_path / "cache" / "audit.jsonl"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[policy]\nmin_age = "soon"\n', "policy.min_age: expected a duration"),
        ('[policy]\nvulnerabilities = "nope.zip"\n', "policy.vulnerabilities: no such file"),
        ('[policy]\nmin_age_sources = ["pypi"]\n', "policy.min_age_sources: no source named"),
        ("[audit]\nkeep = 0\n", "audit.keep: must be at least 1"),
        ('[policy]\nvulnerable = "panic"\n', "policy.vulnerable: expected one of"),
        ('[policy]\nheld = "drop"\n', "policy.held: expected one of"),
    ],
)
def test_a_bad_policy_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, SOURCES + text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_a_bad_include_is_named_under_its_source(tmp_path: Path) -> None:
    path = _write(tmp_path, SOURCES + 'include = ["num py"]\n')
    with pytest.raises(ConfigError, match=r"proxy.toml: sources\[1\].include: not a name pattern"):
        load(path)


def test_deny_rules_and_malicious_are_read(tmp_path: Path) -> None:
    config = load(
        _write(
            tmp_path,
            SOURCES
            + '[policy]\ndeny = ["Acme_Core==1.1.0", "foo>=2,<2.1", "*-win_amd64.whl", "bar"]\n'
            + 'malicious = "yank"\n',
        )
    )
    policy = config.guard.policy
    assert [r.entry for r in policy.deny] == [
        "Acme_Core==1.1.0",
        "foo>=2,<2.1",
        "*-win_amd64.whl",
        "bar",
    ]
    assert policy.malicious == "yank"
    assert load(_write(tmp_path, SOURCES)).guard.policy.malicious == "block"


@pytest.mark.parametrize(
    ("deny", "message"),
    [
        ('["foo>=abc"]', "'foo>=abc' is no requirement specifier"),
        ('["foo[extra]==1"]', "no extras, marker or URL"),
        ("[\"foo==1; python_version < '3'\"]", "no extras, marker or URL"),
        ('["dir/*.whl"]', "holds no path separator"),
        ('[""]', "expected a requirement"),
        ("[1]", "expected a list of strings"),
    ],
)
def test_a_deny_rule_that_cannot_be_read_names_the_key(
    tmp_path: Path, deny: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"policy\.deny: ") as caught:
        load(_write(tmp_path, SOURCES + f"[policy]\ndeny = {deny}\n"))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_malicious_takes_block_or_yank(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy\.malicious: expected one of 'block', 'yank'"):
        load(_write(tmp_path, SOURCES + '[policy]\nmalicious = "hide"\n'))
