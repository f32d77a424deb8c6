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
