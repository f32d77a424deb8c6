"""The [server] keys: the reverse proxy in front, the path prefix, shutdown, log format."""

from pathlib import Path

import pytest

from proxy.config import ConfigError, load


def _config(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(f"[server]\n{server}\n")
    return path


def test_server_keys(tmp_path: Path) -> None:
    config = load(
        _config(
            tmp_path,
            'base_path = "/pypi/"\ntrusted_proxies = ["10.0.0.0/8", "127.0.0.1"]\n'
            'graceful_shutdown = 5\nlog_format = "json"',
        )
    )
    assert config.server.base_path == "/pypi"
    assert config.server.trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert config.server.graceful_shutdown == 5.0
    assert config.server.log_format == "json"
    assert load(_config(tmp_path, "")).server.base_path == ""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('trusted_proxies = ["proxy.local"]', "server.trusted_proxies: not an address"),
        ('base_path = "/a b"', "server.base_path: expected a path"),
        ('log_format = "xml"', "server.log_format: expected text or json"),
        ("graceful_shutdown = 0", "server.graceful_shutdown: must be positive"),
    ],
)
def test_bad_server_keys(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_config(tmp_path, line))
