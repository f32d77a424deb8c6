"""`check-config` on configurations that load but cannot work as meant: an error (exit 2) where
nothing could work, a warning (exit 0) where a part cannot, one line each; sizes in human units."""

from pathlib import Path

import pytest

from gitlab_pypi_proxy.cli import main

_GITLAB = '[gitlab]\nurl = "https://gitlab.example.com"\n'
_PROJECT = '[[sources]]\nname = "platform"\ngitlab_project = "acme/platform"\n'
_GROUP = '[[sources]]\nname = "acme"\ngitlab_group = "acme"\n'


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "proxy.toml"
    path.write_text(f'[cache]\ndirectory = "{tmp_path / "cache"}"\n{text}')
    code = main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_good_configuration_passes_with_sizes_in_human_units(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _check(tmp_path, _GITLAB + _PROJECT, capsys)
    assert (code, err) == (0, "")
    assert "max 20.0 GiB" in out and "at most 3.0 GiB each" in out
    assert "bytes" not in out


def test_no_sources_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(tmp_path, "", capsys)
    assert code == 2
    assert err.splitlines() == [
        f"gitlab-pypi-proxy: error: {tmp_path / 'proxy.toml'}: sources: no [[sources]]: "
        "there is nothing to serve"
    ]


def test_nobody_can_read_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(tmp_path, _GITLAB + _PROJECT + "[auth]\nanonymous_read = false\n", capsys)
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "auth.anonymous_read: false, with no [[users]] and passthrough off" in err
    # with passthrough, GitLab's own credentials read: it can work
    code, _, err = _check(
        tmp_path,
        _GITLAB + _PROJECT + "[auth]\nanonymous_read = false\npassthrough = true\n",
        capsys,
    )
    assert (code, err) == (0, "")


def test_an_uploading_user_without_a_gitlab_token_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI_UPLOAD_TOKEN", raising=False)
    users = (
        '[[users]]\nname = "ci"\npassword = "pw"\nupload = ["platform"]\n'
        'gitlab_token = "${CI_UPLOAD_TOKEN}"\n'
        '[[users]]\nname = "reader"\npassword = "pw"\n'
    )
    code, out, err = _check(tmp_path, _GITLAB + _PROJECT + users, capsys)
    assert code == 0
    assert "config" in out and "OK" in out
    assert err.splitlines() == [
        f"gitlab-pypi-proxy: warning: {tmp_path / 'proxy.toml'}: users[0].gitlab_token: user "
        "'ci' may upload to platform but has no gitlab_token (unset or empty): each of their "
        "uploads will be refused (403)"
    ]


def test_uploads_to_a_group_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = '[[users]]\nname = "ci"\npassword = "pw"\nupload = ["acme"]\ngitlab_token = "t"\n'
    code, _, err = _check(tmp_path, _GITLAB + _GROUP + users, capsys)
    assert code == 0
    assert "users[0].upload: acme is not a gitlab_project source" in err
    code, _, err = _check(
        tmp_path, _GITLAB + _GROUP + '[upload]\ndefault_source = "acme"\n', capsys
    )
    assert code == 2
    assert err.count("\n") == 1
    assert (
        "upload.default_source: 'acme' is a gitlab_group source: GitLab takes uploads into " in err
    )


# Values that load as TOML but broke `serve` (a 500 on every 401 or page, a traceback at start or
# on SIGTERM, a connection closed without an answer): each refused, in one line naming the key.
# (table, key, the value as written in TOML)
_BREAKING = [
    ("auth", "realm", '"プロキシ"'),
    ("auth", "realm", "'say \"hi\"'"),
    ("auth", "realm", '"proxy\\r\\nX-Injected: 1"'),
    ("auth", "realm", '""'),
    ("auth", "failed_logins_per_minute", "1_000_000_000_000"),
    ("gitlab", "timeout", "nan"),
    ("gitlab", "timeout", "inf"),
    ("gitlab", "upload_timeout", "1e300"),
    ("gitlab", "max_requests_per_minute", "1_000_000_000_000"),
    ("gitlab", "url", '"https://gitlab.example.com:99999"'),
    ("gitlab", "url", '"https://gitlab.example.com/a b"'),
    ("gitlab", "token", '"glpat-secret-value\\n"'),
    ("cache", "max_size", '"99999999999999999999TiB"'),
    ("cache", "max_size", '"' + "9" * 400 + '"'),
    ("cache", "max_size", "9_000_000_000_000_000_000"),
    ("cache", "index_ttl", "1_000_000_000_000"),
    ("cache", "negative_ttl", "1_000_000_000_000"),
    ("cache", "directory", '"cache\\u0000"'),
    ("server", "graceful_shutdown", "nan"),
    ("server", "graceful_shutdown", "inf"),
    ("server", "header_timeout", "inf"),
    ("server", "header_timeout", "0"),
    ("server", "workers", "100000"),
    ("server", "host", '"exa mple"'),
    ("upload", "max_size", '"2000TiB"'),
    ("audit", "max_size", '"99999999999999999999TiB"'),
    ("audit", "keep", "1_000_000"),
    ("audit", "path", '"audit\\u0000.jsonl"'),
    ("policy", "min_age", '"999999w"'),
]


@pytest.mark.parametrize(
    ("table", "key", "value"), _BREAKING, ids=[f"{t}.{k}={v[:20]}" for t, k, v in _BREAKING]
)
def test_values_that_load_but_break_serve_are_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, key: str, value: str
) -> None:
    tables = {
        "cache": {"directory": f'"{tmp_path / "cache"}"'},
        "gitlab": {"url": '"https://gitlab.example.com"'},
    }
    tables.setdefault(table, {})[key] = value
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        for name, keys in tables.items()
    )
    path = tmp_path / "proxy.toml"
    path.write_text(text + _PROJECT)
    assert main(["check-config", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"gitlab-pypi-proxy: {path}: {table}.{key}: ")
    assert len(err.splitlines()) == 1 and "secret-value" not in err and "unknown key" not in err
    # `serve` reads the configuration the same way: the same line, before anything starts
    assert main(["serve", "--config", str(path)]) == 2
    assert capsys.readouterr().err == err


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ci:bot", "'ci:bot' can never log in: Basic credentials end it at the ':'"),
        ("ci\\n", "'ci\\n' holds a control character"),
    ],
)
def test_a_user_name_that_could_never_log_in_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, problem: str
) -> None:
    users = f'[[users]]\nname = "{name}"\npassword = "pw"\n'
    code, out, err = _check(tmp_path, _GITLAB + _PROJECT + users, capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"gitlab-pypi-proxy: {tmp_path / 'proxy.toml'}: users[0].name: {problem}"
    ]


def test_a_user_token_with_a_newline_is_refused_without_showing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = '[[users]]\nname = "ci"\npassword = "pw"\ngitlab_token = "glpat-secret-value\\r\\n"\n'
    code, out, err = _check(tmp_path, _GITLAB + _PROJECT + users, capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"gitlab-pypi-proxy: {tmp_path / 'proxy.toml'}: users[0].gitlab_token: holds whitespace "
        "or a control character (a newline at the end of an environment variable or a secret "
        "file?)"
    ]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--workers", "100000"], 'expected "auto" or a number from 1 to 64'),
        (["--port", "99999"], "expected a port number from 0 to 65535"),
    ],
)
def test_serve_options_out_of_range_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--config", str(tmp_path / "proxy.toml"), *option])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)


def test_a_deny_rule_that_is_no_specifier_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _check(tmp_path, _GITLAB + _PROJECT + '[policy]\ndeny = ["acme>=1,<"]\n', capsys)
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(
        f"gitlab-pypi-proxy: {tmp_path / 'proxy.toml'}: policy.deny: 'acme>=1,<' is no "
        "requirement specifier: "
    )
