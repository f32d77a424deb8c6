"""Credentials written into URLs are masked wherever a URL is shown or logged: check-config,
config errors, log lines (tracebacks included), error bodies and the status page."""

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from gitlab_pypi_proxy.cli import main
from gitlab_pypi_proxy.config import ConfigError, load
from gitlab_pypi_proxy.http.error_responses import error_response
from gitlab_pypi_proxy.http.status_page import render
from gitlab_pypi_proxy.log_format import JsonFormatter, logging_config
from gitlab_pypi_proxy.redact import MaskUserinfo, mask_userinfo

SECRET = "glpat-s3cr3t-in-url"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"https://oauth2:{SECRET}@gitlab.example.com", "https://***@gitlab.example.com"),
        (
            f"https://oauth2:{SECRET}@gitlab.example.com/api?x=1",
            "https://***@gitlab.example.com/api?x=1",
        ),
        (f"http://u:p@ss:{SECRET}@h:8080/x", "http://***@h:8080/x"),  # "@" in the password
        (f"https://{SECRET}@h/", "https://***@h/"),  # a token alone
        (f"htps://oauth2:{SECRET}@h", "htps://***@h"),  # any scheme
        (f"oauth2:{SECRET}@gitlab.example.com", "***@gitlab.example.com"),  # no scheme
        (
            f"upstream https://a:{SECRET}@h/x failed, then http://b:{SECRET}@k/",
            "upstream https://***@h/x failed, then http://***@k/",
        ),
        ("https://gitlab.example.com/a@b", "https://gitlab.example.com/a@b"),  # "@" in a path
        ("alice@example.com uploaded", "alice@example.com uploaded"),  # a user name, no URL
        ("/simple/x@y/", "/simple/x@y/"),
        ("no url here", "no url here"),
    ],
)
def test_mask_userinfo(text: str, masked: str) -> None:
    assert mask_userinfo(text) == masked


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "url", [f"htps://oauth2:{SECRET}@gitlab.example.com", f"oauth2:{SECRET}@gitlab.example.com"]
)
def test_a_bad_url_in_the_config_is_named_without_its_credentials(tmp_path: Path, url: str) -> None:
    path = _write(tmp_path, f"[gitlab]\nurl = '{url}'\n")
    with pytest.raises(ConfigError, match=r"gitlab\.url: expected an http") as caught:
        load(path)
    assert SECRET not in str(caught.value)
    assert "gitlab.example.com" in str(caught.value)


def test_check_config_masks_credentials_in_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        f"""
[gitlab]
url = "https://oauth2:{SECRET}@gitlab.example.com"
[[sources]]
name = "platform"
gitlab_project = 11
[[sources]]
name = "mirror"
url = "https://reader:{SECRET}@pypi.internal/simple/"
""",
    )
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "gitlab https://***@gitlab.example.com" in out
    assert "source 2: mirror = url https://***@pypi.internal/simple/" in out


def test_log_lines_and_tracebacks_are_masked() -> None:
    config = logging_config("info", "text")
    assert "userinfo" in config["handlers"]["stderr"]["filters"]
    assert config["filters"]["userinfo"]["()"] == "gitlab_pypi_proxy.redact.MaskUserinfo"
    try:
        raise ValueError(f"cannot reach https://oauth2:{SECRET}@gitlab.example.com")
    except ValueError as exc:
        failure = exc
        exc_info = sys.exc_info()
    for formatter in (logging.Formatter("%(message)s"), JsonFormatter()):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.addFilter(MaskUserinfo())
        handler.setFormatter(formatter)
        logger = logging.getLogger(f"test.redact.{type(formatter).__name__}")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            logger.error("GET %s: %s", f"https://u:{SECRET}@h/x", failure, exc_info=exc_info)
            logger.warning(f"source https://u:{SECRET}@h/ down")
        finally:
            logger.removeHandler(handler)
        text = out.getvalue()
        assert SECRET not in text
        assert "https://***@h/x" in text and "https://***@gitlab.example.com" in text
        assert "ValueError" in text  # the traceback is still there, masked
    json.loads(text.splitlines()[-1])  # each JSON line still parses


def test_error_bodies_are_masked() -> None:
    response = error_response(502, f"upstream https://oauth2:{SECRET}@gitlab.example.com failed")
    assert SECRET.encode() not in response.body
    assert response.body == b"upstream https://***@gitlab.example.com failed\n"


def test_the_status_page_masks_its_urls() -> None:
    html = render(f"http://u:{SECRET}@proxy.example/", [])
    assert SECRET not in html
    assert "http://***@proxy.example/simple/" in html
