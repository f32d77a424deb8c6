"""gitlab_pypi_proxy.policy.rules: the guard's settings from TOML tables, cooldown, exemptions, name
rules."""

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import ConfigError
from gitlab_pypi_proxy.policy import rules
from gitlab_pypi_proxy.policy.rules import FileFacts, parse_duration

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
SOURCES = [
    {"name": "private", "gitlab_project": "acme/packages"},
    {"name": "public", "url": "https://pypi.org/simple/"},
]


def _error(key: str, message: str) -> ConfigError:
    return ConfigError(f"proxy.toml: {key}: {message}")


def _parse(policy=None, sources=None, audit=None, base: Path = Path("/etc/proxy")):
    return rules.parse(
        policy or {},
        SOURCES if sources is None else sources,
        audit or {},
        base=base,
        cache_directory=Path("/var/cache/proxy"),
        error=_error,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("1w", timedelta(weeks=1)),
        (" 2D ", timedelta(days=2)),
        ("off", timedelta(0)),
        ("0d", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7 days", "7", "", "1y", "-1d", "1.5d", "d", 7, None])
def test_a_duration_that_is_none_says_so_in_one_line(text: object) -> None:
    with pytest.raises(rules.InvalidRule, match='expected a duration such as "7d"') as caught:
        parse_duration(text)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_durations_are_shown_in_the_largest_unit_that_fits() -> None:
    assert rules.format_duration(timedelta(weeks=2)) == "2w"
    assert rules.format_duration(timedelta(days=3)) == "3d"
    assert rules.format_duration(timedelta(hours=36)) == "36h"
    assert rules.format_duration(timedelta(minutes=90)) == "90m"


def test_defaults_hold_nothing_back_and_keep_an_audit_trail() -> None:
    settings = _parse()
    policy = settings.policy
    assert policy.min_age == timedelta(0)  # off unless asked for: existing setups keep working
    assert rules.hold(policy, _file(NOW - timedelta(minutes=5)), NOW) is None
    assert policy.min_age_sources == {"public"}  # once set: every url source, no GitLab source
    assert policy.unknown_age == "allow"
    assert policy.vulnerable == "yank"
    assert policy.vulnerabilities is None
    assert policy.exempt == ()
    assert policy.rules_for("public") == rules.SourceRules(include=None, exclude=())
    assert settings.audit.path == Path("/var/cache/proxy/audit.jsonl")
    assert (settings.audit.max_size, settings.audit.keep) == (64 * 2**20, 4)


def test_the_issues_example_configuration(tmp_path: Path) -> None:
    (tmp_path / "osv-PyPI.zip").write_bytes(b"read later, by gitlab_pypi_proxy.policy.osv")
    document = tomllib.loads(
        """
        [policy]
        min_age = "7d"
        min_age_sources = ["public"]
        exempt = ["certifi", "acme-*", "urllib3==2.5.1"]
        unknown_age = "allow"
        vulnerabilities = "./osv-PyPI.zip"
        vulnerable = "yank"

        [[sources]]
        name = "public"
        url = "https://pypi.org/simple/"
        include = ["numpy", "requests", "django*"]
        exclude = ["acme-*"]

        [audit]
        path = "./audit.jsonl"
        """
    )
    settings = _parse(document["policy"], document["sources"], document["audit"], base=tmp_path)
    policy = settings.policy
    assert policy.vulnerabilities == tmp_path / "osv-PyPI.zip"
    assert [e.entry for e in policy.exempt] == ["certifi", "acme-*", "urllib3==2.5.1"]
    assert [g.pattern for g in policy.rules_for("public").include] == [
        "numpy",
        "requests",
        "django*",
    ]
    assert settings.audit.path == tmp_path / "audit.jsonl"


def test_off_turns_the_cooldown_and_the_audit_trail_off() -> None:
    settings = _parse({"min_age": "off"}, audit={"path": "off", "max_size": "1MiB", "keep": 9})
    assert settings.policy.min_age == timedelta(0)
    assert settings.audit.path is None
    assert (settings.audit.max_size, settings.audit.keep) == (2**20, 9)


@pytest.mark.parametrize(
    ("policy", "sources", "audit", "key", "message"),
    [
        ({"min_age": "a week"}, None, None, "policy.min_age", "expected a duration"),
        ({"min_age": 7}, None, None, "policy.min_age", "expected a duration"),
        ({"min_age_sources": ["pypi"]}, None, None, "policy.min_age_sources", "no source named"),
        ({"min_age_sources": "public"}, None, None, "policy.min_age_sources", "list of strings"),
        ({"exempt": ["urllib3==two"]}, None, None, "policy.exempt", "'two' is not a version"),
        ({"exempt": ["bad name!"]}, None, None, "policy.exempt", "not a name pattern"),
        ({"exempt": ["-x==1.0"]}, None, None, "policy.exempt", "not a valid project name"),
        ({"unknown_age": "maybe"}, None, None, "policy.unknown_age", "'allow', 'hold'"),
        ({"vulnerable": "delete"}, None, None, "policy.vulnerable", "'yank', 'hide', 'off'"),
        ({"vulnerabilities": "nope.zip"}, None, None, "policy.vulnerabilities", "no such file"),
        ({"min_agee": "7d"}, None, None, "policy.min_agee", "unknown key"),
        (
            None,
            [*SOURCES, {"name": "x", "url": "u", "include": []}],
            None,
            "sources[2].include",
            "is empty",
        ),
        (
            None,
            [{"name": "x", "url": "u", "exclude": ["a/b"]}],
            None,
            "sources[0].exclude",
            "not a name pattern",
        ),
        (
            None,
            [{"name": "x", "url": "u", "include": "numpy"}],
            None,
            "sources[0].include",
            "list of strings",
        ),
        (None, None, {"max_size": "huge"}, "audit.max_size", "not a size"),
        (None, None, {"max_size": "1KiB"}, "audit.max_size", "at least 64KiB"),
        (None, None, {"keep": 0}, "audit.keep", "at least 1"),
        (None, None, {"keep": True}, "audit.keep", "expected an integer"),
        (None, None, {"path": 3}, "audit.path", "expected a string"),
        (None, None, {"rotate": 3}, "audit.rotate", "unknown key"),
    ],
)
def test_each_mistake_is_a_config_error_naming_file_and_key(
    policy, sources, audit, key: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(policy, sources, audit, base=tmp_path)
    text = str(caught.value)
    assert text.startswith(f"proxy.toml: {key}: "), text
    assert message in text
    assert "\n" not in text


def _file(uploaded: datetime | None, *, name="requests", version="2.32.0", source="public"):
    return FileFacts(name=name, version=version, upload_time=uploaded, source=source)


def test_a_file_younger_than_min_age_is_held_until_it_is_old_enough() -> None:
    policy = _parse({"min_age": "1d"}).policy
    uploaded = NOW - timedelta(hours=1)
    held = rules.hold(policy, _file(uploaded), NOW)
    assert held is not None
    assert held.rule == "min_age"
    assert held.until == uploaded + timedelta(days=1)
    assert held.reason == (
        'held by [policy] min_age = "1d": uploaded 2025-06-10T11:00:00Z, '
        "available from 2025-06-11T11:00:00Z"
    )
    assert rules.hold(policy, _file(uploaded), held.until) is None
    assert rules.hold(policy, _file(NOW - timedelta(days=2)), NOW) is None


def test_a_naive_upload_time_is_read_as_utc() -> None:
    policy = _parse({"min_age": "1d"}).policy
    held = rules.hold(policy, _file(datetime(2025, 6, 10, 11, 0)), NOW)
    assert held is not None and held.until == datetime(2025, 6, 11, 11, 0, tzinfo=UTC)


def test_only_the_min_age_sources_are_delayed() -> None:
    fresh = NOW - timedelta(minutes=5)
    default = _parse({"min_age": "7d"}).policy
    assert rules.hold(default, _file(fresh, source="private"), NOW) is None
    assert rules.hold(default, _file(fresh, source="public"), NOW) is not None
    private_too = _parse({"min_age": "7d", "min_age_sources": ["private", "public"]}).policy
    assert rules.hold(private_too, _file(fresh, source="private"), NOW) is not None
    off = _parse({"min_age": "off"}).policy
    assert rules.hold(off, _file(fresh), NOW) is None


def test_exempt_names_globs_and_single_versions_are_never_held() -> None:
    policy = _parse(
        {"min_age": "7d", "exempt": ["certifi", "acme_*", "urllib3==2.5.1"], "unknown_age": "hold"}
    ).policy
    fresh = NOW - timedelta(minutes=5)
    assert rules.hold(policy, _file(fresh, name="Certifi"), NOW) is None
    assert rules.hold(policy, _file(fresh, name="acme.tools"), NOW) is None
    assert rules.hold(policy, _file(None, name="ACME-Lib"), NOW) is None
    assert rules.hold(policy, _file(fresh, name="urllib3", version="2.5.1.0"), NOW) is None
    assert rules.hold(policy, _file(fresh, name="urllib3", version="2.5.2"), NOW)
    assert rules.hold(policy, _file(fresh, name="acmetools"), NOW)  # no separator


def test_a_file_of_unknown_age_is_served_or_held_as_unknown_age_says() -> None:
    assert rules.hold(_parse({"min_age": "7d"}).policy, _file(None), NOW) is None
    # unknown_age only says what the cooldown does with such files: no cooldown, no hold
    assert rules.hold(_parse({"unknown_age": "hold"}).policy, _file(None), NOW) is None
    held = rules.hold(_parse({"min_age": "7d", "unknown_age": "hold"}).policy, _file(None), NOW)
    assert held is not None
    assert held.rule == "unknown_age" and held.until is None
    assert held.reason == (
        'held by [policy] unknown_age = "hold": '
        "source 'public' gives no upload time for this file"
    )


def test_include_and_exclude_match_normalized_names_and_exclude_wins() -> None:
    sources = [
        {
            "name": "public",
            "url": "u",
            "include": ["numpy", "Django*", "acme-*"],
            "exclude": ["acme_*"],
        },
        {"name": "other", "url": "v"},
    ]
    policy = _parse(sources=sources).policy
    assert rules.refusal(policy, "public", "NumPy") is None
    assert rules.refusal(policy, "public", "django_rest.framework") is None
    assert rules.refusal(policy, "public", "flask") == (
        "flask is not served from source 'public': not in its include list"
    )
    assert rules.refusal(policy, "public", "Acme.Tools") == (
        "acme-tools is not served from source 'public': its exclude has 'acme_*'"
    )
    assert rules.refusal(policy, "other", "acme-tools") is None
    assert rules.refusal(policy, "unconfigured", "anything") is None
