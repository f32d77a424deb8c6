"""How each server under test is configured and started on loopback, as its users would run it."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import dataset, upstream
from bench.processes import Processes, Running
from gitlab_pypi_proxy.demo.server import free_port

ROOT = Path(__file__).resolve().parent.parent
# The proxy's code is imported from here (`python -m gitlab_pypi_proxy` puts the working directory
# first): BENCH_PROXY_SRC=/some/checkout benchmarks another branch with this harness.
PROXY_SRC = Path(os.environ.get("BENCH_PROXY_SRC", ROOT)).resolve()
PEERS_BIN = ROOT / "bench" / ".venv" / "bin"
WORKERS = 2  # what the README recommends on 2 cores


@dataclass
class Target:
    name: str
    index_url: str  # the simple index, ending in "/"
    running: Running | None  # None for the upstream double's own listing


@dataclass
class Upstream:
    url: str
    running: Running

    def project_simple(self, project: int) -> str:
        return f"{self.url}/api/v4/projects/{project}/packages/pypi/simple/"


def start_upstream(procs: Processes, data: Path | None) -> Upstream:
    """The GitLab double with the data set in `data`; None: the real-index scenario's stand-in."""
    port = free_port()
    command = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    command += [] if data is None else ["--data", str(data)]
    running = procs.start("upstream", command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(running, f"{url}/_bench/count", seconds=180)
    return Upstream(url, running)


def write_proxy_config(
    directory: Path,
    up: Upstream,
    projects: tuple[int, ...],
    index_ttl: int = 3600,
    extra: str = "",
    server: str = "",
) -> Path:
    """`extra`: more tables (the S3 scenario's [storage] and [cluster]); `server`: more keys of
    [server] (scenario 2's accel_redirect)."""
    directory.mkdir(parents=True, exist_ok=True)
    sources = "".join(f'[[sources]]\nname = "p{p}"\ngitlab_project = "{p}"\n' for p in projects)
    text = f"""[server]
host = "127.0.0.1"
workers = {WORKERS}
log_level = "warning"
{server}
[cache]
directory = "{directory / "cache"}"
max_size = "20GiB"
index_ttl = {index_ttl}

[gitlab]
url = "{up.url}"
token = "{upstream.TOKEN}"
timeout = 60

{sources}
[upload]
default_source = "p{projects[0]}"

[[users]]
name = "bench"
password = "bench"
upload = ["*"]
gitlab_token = "{upstream.TOKEN}"
{extra}"""
    path = directory / "proxy.toml"
    path.write_text(text)
    return path


def start_proxy(
    procs: Processes,
    work: Path,
    up: Upstream,
    projects: tuple[int, ...],
    label: str = "proxy",
    index_ttl: int = 3600,
    extra: str = "",
    env: dict[str, str] | None = None,
    server: str = "",
) -> Target:
    config = write_proxy_config(work / label, up, projects, index_ttl, extra, server)
    port = free_port()
    command = [sys.executable, "-m", "gitlab_pypi_proxy", "serve", "--config", str(config)]
    command += ["--port", str(port), "--workers", str(WORKERS)]
    running = procs.start(label, command, cwd=PROXY_SRC, env=env)
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(running, f"{url}/healthz")
    return Target(label, f"{url}/simple/", running)


def start_proxpi(
    procs: Processes,
    work: Path,
    up: Upstream,
    projects: tuple[int, ...] = (dataset.MAIN_PROJECT,),
    label: str = "proxpi",
) -> Target:
    """proxpi's own deployment: gunicorn, one process (its caches are per process), threads.
    More than one project: the first is its index, the others its extra indexes."""
    indexes = [up.project_simple(p) for p in projects]
    return start_proxpi_of(procs, work, indexes[0], indexes[1:], label)


def start_proxpi_of(
    procs: Processes, work: Path, index: str, extra: list[str], label: str = "proxpi"
) -> Target:
    """proxpi over the simple index `index` (and `extra` indexes)."""
    port = free_port()
    env = {
        "PROXPI_INDEX_URL": index,
        "PROXPI_EXTRA_INDEX_URLS": ",".join(extra),
        "PROXPI_CACHE_DIR": str(work / f"{label}-cache"),
        "PROXPI_INDEX_TTL": "3600",
        "PROXPI_LOGGING_LEVEL": "WARNING",
    }
    command = [str(PEERS_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    command += ["--threads", "16", "--log-level", "warning", "proxpi.server:app"]
    running = procs.start(label, command, env=env)
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(running, f"{url}/health")  # not /index/: the public one is 600,000 names
    return Target(label, f"{url}/index/", running)


def start_devpi(procs: Processes, work: Path, up: Upstream) -> Target:
    """devpi-server with its defaults and a mirror index `root/gitlab` of the same project."""
    return start_devpi_of(procs, work, up.project_simple(dataset.MAIN_PROJECT), "gitlab")


def start_devpi_of(
    procs: Processes,
    work: Path,
    mirror: str,
    index: str,
    label: str = "devpi",
    options: tuple[str, ...] = (),
) -> Target:
    """devpi-server with its defaults and a mirror index `root/<index>` of the index `mirror`
    (`options`: more of the index's settings, `key=value`)."""
    serverdir = work / f"{label}-server"
    port = free_port()
    init = [str(PEERS_BIN / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi"]
    subprocess.run([*init, "--root-passwd", ""], check=True, capture_output=True, timeout=120)
    command = [str(PEERS_BIN / "devpi-server"), "--serverdir", str(serverdir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    running = procs.start(label, command)
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(running, f"{url}/+api")
    _devpi(work, ["use", url])
    _devpi(work, ["login", "root", "--password", ""])
    _devpi(work, ["index", "-c", index, "type=mirror", f"mirror_url={mirror}", *options])
    return Target(label, f"{url}/root/{index}/+simple/", running)


def _devpi(work: Path, args: list[str]) -> None:
    client = [str(PEERS_BIN / "devpi"), "--clientdir", str(work / "devpi-client")]
    subprocess.run(client + args, check=True, capture_output=True, timeout=120)


def add_devpi_mirror(work: Path, devpi: Target, up: Upstream, project: int) -> Target:
    """One more mirror index on the running devpi-server, of another project."""
    _devpi(
        work,
        ["index", "-c", f"p{project}", "type=mirror", f"mirror_url={up.project_simple(project)}"],
    )
    base = devpi.index_url.removesuffix("root/gitlab/+simple/")
    return Target(f"devpi (p{project})", f"{base}root/p{project}/+simple/", devpi.running)


def add_devpi_merged(work: Path, devpi: Target, up: Upstream, projects: tuple[int, ...]) -> Target:
    """devpi's way to merge sources: a mirror index per project, and an index based on them."""
    for project in projects:
        mirror = up.project_simple(project)
        _devpi(work, ["index", "-c", f"p{project}", "type=mirror", f"mirror_url={mirror}"])
    bases = ",".join(f"root/p{p}" for p in projects)
    _devpi(work, ["index", "-c", "merged", f"bases={bases}"])
    base = devpi.index_url.removesuffix("root/gitlab/+simple/")
    return Target(f"devpi ({len(projects)} sources)", f"{base}root/merged/+simple/", devpi.running)


NGINX_CONF = """
daemon off;
user root;
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    types {{ application/vnd.pypi.simple.v1+json json; }}
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    map $http_accept $simple_index {{
        default index.html;
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {data};
        location /simple/ {{ index $simple_index; }}
        location /files/ {{ default_type application/octet-stream; }}
    }}
}}
"""


def start_nginx(procs: Processes, work: Path, data: Path) -> Target:
    """nginx from Debian serving the data set and its pre-rendered pages from disk."""
    directory = work / "nginx"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=WORKERS, work=directory, port=port, data=data))
    running = procs.start("nginx", ["nginx", "-c", str(conf), "-p", str(directory)])
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(running, f"{url}/simple/")
    return Target("nginx", f"{url}/simple/", running)


ACCEL_CONF = """
daemon off;
user root;
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream gitlab_pypi_proxy {{
        server {proxy};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_buffering off;
        location / {{
            proxy_pass http://gitlab_pypi_proxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
        {internal}
    }}
}}
"""


def start_proxy_behind_nginx(procs: Processes, work: Path, up: Upstream) -> tuple[Target, Target]:
    """This proxy with `[server] accel_redirect`, behind nginx with deploy/single/nginx.conf's
    internal location, which sends the cached files: (nginx in front, the proxy)."""
    proxy = start_proxy(procs, work, up, (dataset.MAIN_PROJECT,), "proxy-accel", server=_KEY)
    directory = work / "nginx-accel"
    directory.mkdir(parents=True, exist_ok=True)
    deployed = (ROOT / "deploy" / "single" / "nginx.conf").read_text()
    internal = deployed[deployed.index("location /_cached/ {") :]
    internal = internal[: internal.index("\n        }") + len("\n        }")]
    cache = work / "proxy-accel" / "cache"
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(
        ACCEL_CONF.format(
            workers=WORKERS,
            work=directory,
            port=port,
            proxy=proxy.index_url.removeprefix("http://").removesuffix("/simple/"),
            internal=internal.replace("/var/cache/gitlab-pypi-proxy/", f"{cache}/"),
        )
    )
    running = procs.start("nginx-accel", ["nginx", "-c", str(conf), "-p", str(directory)])
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(running, f"{url}/healthz")
    return Target(ACCEL, f"{url}/simple/", running), proxy


ACCEL = "proxy behind nginx (accel_redirect)"
_KEY = 'accel_redirect = "/_cached/"\n'
