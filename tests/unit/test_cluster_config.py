"""The [storage] and [cluster] keys: validated, secrets from the environment and never
shown, the one-machine default when absent."""

import subprocess
import sys
from pathlib import Path

import pytest

from gitlab_pypi_proxy.config import ClusterConfig, ConfigError, StorageConfig, load

S3 = """[storage]
backend = "s3"
endpoint_url = "http://127.0.0.1:8333"
bucket = "pypi-proxy"
prefix = "files/"
region = "us-east-1"
access_key_id = "${S3_ACCESS_KEY_ID}"
secret_access_key = "${S3_SECRET_ACCESS_KEY}"
"""


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return path


def test_absent_tables_mean_one_machine(tmp_path: Path) -> None:
    config = load(_config(tmp_path, ""))
    assert config.storage == StorageConfig() and config.storage.backend == "local"
    assert config.cluster == ClusterConfig() and config.cluster.redis_url is None


def test_the_issue_s_names_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "very-secret-key")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@redis.internal:6379/0")
    text = S3 + 'redirect = true\n[cluster]\nredis_url = "${REDIS_URL}"\n'
    config = load(_config(tmp_path, text))
    storage = config.storage
    assert storage.backend == "s3" and storage.bucket == "pypi-proxy"
    assert storage.endpoint_url == "http://127.0.0.1:8333" and storage.prefix == "files/"
    assert storage.access_key_id == "AKIDEXAMPLE"
    assert storage.secret_access_key == "very-secret-key" and storage.redirect
    assert config.cluster.redis_url == "redis://:hunter2@redis.internal:6379/0"
    shown = repr(config)
    assert "very-secret-key" not in shown and "hunter2" not in shown


def test_check_config_describes_both_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "very-secret-key")
    text = S3 + '[cluster]\nredis_url = "redis://:hunter2@127.0.0.1:6379/0"\n'
    public = '[[sources]]\nname = "public"\nurl = "https://pypi.org/simple/"\n'
    path = _config(tmp_path, text + public)  # check-config fails a configuration with no source
    checked = subprocess.run(
        [sys.executable, "-m", "gitlab_pypi_proxy", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "storage: s3 bucket 'pypi-proxy'" in checked.stdout
    assert "cluster: redis redis://***@127.0.0.1:6379/0" in checked.stdout
    for secret in ("very-secret-key", "hunter2", "AKIDEXAMPLE"):
        assert secret not in checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[storage]\nbackend = "nfs"', 'storage.backend: expected "local" or "s3"'),
        ('[storage]\nbackend = "s3"', "storage.bucket: required"),
        ('[storage]\nbackend = "s3"\nbucket = "Bad_Bucket"', "storage.bucket: not an S3 bucket"),
        ('[storage]\nbucket = "pypi-proxy"', 'storage.bucket: only with backend = "s3"'),
        (S3.replace('"files/"', '"files"'), "storage.prefix: expected a key prefix"),
        (S3.replace('"http://127.0.0.1:8333"', '"ftp://x"'), "storage.endpoint_url: expected"),
        (S3.replace("secret_access_key", "#"), "storage.access_key_id: set both"),
        (S3 + "redirect = 1", "storage.redirect: expected true or false"),
        (S3 + "lifecycle = 1", "storage.lifecycle: unknown key"),
        ("[cluster]\nredis = 1", "cluster.redis: unknown key"),
        ('[cluster]\nredis_url = "http://:pw@redis:6379"', r"cluster.redis_url: expected"),
        ('[cluster]\nredis_url = "${NO_SUCH_REDIS}"', "NO_SUCH_REDIS is not set"),
    ],
)
def test_bad_keys_name_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "very-secret-key")
    monkeypatch.delenv("NO_SUCH_REDIS", raising=False)
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert "pw@" not in str(raised.value) and "very-secret-key" not in str(raised.value)
