"""`[server] accel_redirect`: behind nginx, a cached file goes out from nginx itself (its internal
location, deploy/single/nginx.conf's, aliasing the cache's files), but only once the proxy has
done its read check and hashed the file: a reader who may not read it gets the proxy's 404 or
502, never the header. nginx answers ranges and HEAD itself, with the proxy's ETag.

One proxy (local disk) and one nginx from Debian (`.ci/run` installs it), both started here."""

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.demo.server import free_port
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until

TOKEN = "glpat-accel"
DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "single" / "nginx.conf"
USERS = """
[server]
accel_redirect = "/_cached/"

[auth]
anonymous_read = false

[[users]]
name = "all"
password = "all-password"

[[users]]
name = "other-reader"
password = "other-password"
read = ["other"]
"""
ALL = ("all", "all-password")
OTHER = ("other-reader", "other-password")
WHEEL = make_wheel("accel-pkg", "1.0", pad_bytes=300 * 1024)
SHA = hashlib.sha256(WHEEL[1]).hexdigest()
SPOILT = make_wheel("spoilt-pkg", "1.0", pad_bytes=300 * 1024)  # corrupted on disk once cached
FORGED = "other_tool-1.0-py3-none-any.whl"  # project 12 lists the digest for bytes of its own
NGINX = """
daemon off;
{user}
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {proxy};
            proxy_buffering off;
        }}
        {internal}
    }}
}}
"""


def _internal_location(cache: Path) -> str:
    """deploy/single/nginx.conf's internal location, aliasing this proxy's cache."""
    found = re.search(r"location /_cached/ \{.*?\n        \}", DEPLOYED.read_text(), re.DOTALL)
    assert found, "deploy/single/nginx.conf has no internal location /_cached/"
    return found.group(0).replace("/var/cache/gitlab-pypi-proxy/", f"{cache}/")


@dataclass
class World:
    proxy: ProxyProcess
    nginx: str  # its URL
    cache: Path

    def path(self, filename: str = WHEEL[0], sha256: str = SHA) -> str:
        return f"/files/{sha256}/{filename}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    assert shutil.which("nginx"), (
        "nginx is missing: .ci/run installs it (apt-get install nginx-light)"
    )
    gitlab = GitLabDouble()
    gitlab.add_project(11, "acme/platform")
    gitlab.add_project(12, "acme/other")
    gitlab.add_token(TOKEN, read={11, 12})
    gitlab.add_package_file(11, "accel-pkg", "1.0", *WHEEL)
    gitlab.add_package_file(11, "spoilt-pkg", "1.0", *SPOILT)
    gitlab.add_package_file(12, "other-tool", "1.0", FORGED, b"its own bytes", sha256=SHA)
    work = tmp_path_factory.mktemp("accel")
    sources = [
        {"name": "platform", "gitlab_project": 11},
        {"name": "other", "gitlab_project": 12},
    ]
    with serve(gitlab.app) as server:
        config = write_config(work, server.url, sources, token=TOKEN, extra=USERS)
        proxy = start_proxy(config)
        port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(
            NGINX.format(
                user="user root;" if os.geteuid() == 0 else "",
                work=work,
                port=port,
                proxy=proxy.url,
                internal=_internal_location(work / "cache"),
            )
        )
        nginx = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _answers(url, nginx), "nginx to answer", 30)
            yield World(proxy, url, work / "cache")
        finally:
            nginx.terminate()
            nginx.wait(timeout=30)
            proxy.stop()
    assert "Traceback" not in proxy.log(), proxy.log()


def _answers(url: str, nginx: subprocess.Popen[bytes]) -> bool:
    if nginx.poll() is not None:
        raise RuntimeError(f"nginx exited with {nginx.returncode}")
    try:
        return httpx2.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx2.TransportError:
        return False


def test_a_cached_file_goes_out_from_nginx_after_the_read_check(world: World) -> None:
    first = httpx2.get(world.nginx + world.path(), auth=ALL, timeout=30)  # downloads, keeps
    assert first.status_code == 200 and first.content == WHEEL[1]
    assert first.headers["x-cache"] == "MISS" and "x-accel-redirect" not in first.headers
    # the proxy's answer, seen without nginx: the header, and no body of its own
    direct = httpx2.get(world.proxy.url + world.path(), auth=ALL, timeout=30)
    assert direct.status_code == 200 and direct.content == b""
    # its path under the cache's files/, never the client's words
    assert direct.headers["x-accel-redirect"] == f"/_cached/sha256/{SHA[:2]}/{SHA}"
    # through nginx: nginx's body, the proxy's headers
    sent = httpx2.get(world.nginx + world.path(), auth=ALL, timeout=30)
    assert sent.status_code == 200 and sent.content == WHEEL[1]
    assert sent.headers["etag"] == f'"{SHA}"' and sent.headers["x-cache"] == "HIT"
    assert sent.headers["content-type"] == "application/octet-stream"
    assert sent.headers["cache-control"] == direct.headers["cache-control"]
    assert "x-accel-redirect" not in sent.headers
    ranged = httpx2.get(
        world.nginx + world.path(), headers={"Range": "bytes=-100"}, auth=ALL, timeout=30
    )
    size = len(WHEEL[1])
    assert ranged.status_code == 206 and ranged.content == WHEEL[1][-100:]
    assert ranged.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    head = httpx2.head(world.nginx + world.path(), auth=ALL, timeout=30)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)
    assert head.headers["accept-ranges"] == "bytes"


def test_a_reader_who_may_not_read_it_never_gets_the_header(world: World) -> None:
    kept = httpx2.get(world.nginx + world.path(), auth=ALL, timeout=30)
    assert kept.status_code == 200 and kept.content == WHEEL[1]
    for base in (world.proxy.url, world.nginx):
        anonymous = httpx2.get(base + world.path(), timeout=30)
        assert anonymous.status_code == 401 and "x-accel-redirect" not in anonymous.headers
        outsider = httpx2.get(base + world.path(), auth=OTHER, timeout=30)  # not its source's
        assert outsider.status_code == 404 and "x-accel-redirect" not in outsider.headers
        forged = httpx2.get(base + world.path(FORGED), auth=OTHER, timeout=30)
        assert forged.status_code == 502 and "x-accel-redirect" not in forged.headers
        assert forged.text == f"source other: {FORGED} sha256 does not match its listing\n"
        assert WHEEL[1][:64] not in outsider.content + forged.content


def test_the_internal_location_is_not_reachable_from_outside(world: World) -> None:
    direct = httpx2.get(world.proxy.url + world.path(), auth=ALL, timeout=30)
    location = direct.headers["x-accel-redirect"]
    assert httpx2.get(world.nginx + location, auth=ALL, timeout=30).status_code == 404


def test_a_cached_file_whose_bytes_changed_on_disk_is_never_handed_to_nginx(world: World) -> None:
    path = world.path(SPOILT[0], hashlib.sha256(SPOILT[1]).hexdigest())
    kept = httpx2.get(world.nginx + path, auth=ALL, timeout=30)
    assert kept.status_code == 200 and kept.content == SPOILT[1]
    location = httpx2.get(world.proxy.url + path, auth=ALL, timeout=30).headers["x-accel-redirect"]
    on_disk = world.cache / "files" / location.removeprefix("/_cached/")
    on_disk.write_bytes(bytes(len(SPOILT[1])))  # same size, other bytes
    again = httpx2.get(world.nginx + path, auth=ALL, timeout=30)  # hashed, dropped, fetched
    assert again.status_code == 200 and again.content == SPOILT[1]
    assert again.headers["x-cache"] == "MISS"
