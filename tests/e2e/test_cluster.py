"""End to end: two replicas (two `serve` processes, each its own local directory) share
one bucket (SeaweedFS) and one Redis in front of the GitLab double. Every part is real and
started here; every wait is bounded. Tests that keep Redis and SeaweedFS running share the
module's, emptied before each; a test that stops either starts its own."""

import asyncio
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import obstore
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.storage.metadata_store import MetadataStore
from tests.backing_services import RedisServer, S3Server, running_redis, running_seaweedfs
from tests.clients import clear_client_caches, pip_install
from tests.proxy_process import ProxyProcess, free_port, start_proxy, write_config
from tests.servers import Server, serve
from tests.waiting import wait_until
from tests.worlds import UPLOADER_CONFIG, app_taking_uploads, pinned_url, upload_wheel

TOKEN = "glpat-cluster-reader"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@dataclass
class Cluster:
    a: ProxyProcess
    b: ProxyProcess
    gitlab: GitLabDouble
    gitlab_server: Server
    redis: RedisServer
    s3: S3Server
    replica_dirs: dict[str, Path]

    @property
    def replicas(self) -> list[ProxyProcess]:
        return [self.a, self.b]


def cluster_config(s3: S3Server, redis_url: str, *, redirect: bool = False) -> str:
    return f"""
[storage]
backend = "s3"
endpoint_url = "{s3.endpoint_url}"
bucket = "{s3.bucket}"
prefix = "files/"
region = "{s3.region}"
access_key_id = "${{S3_ACCESS_KEY_ID}}"
secret_access_key = "${{S3_SECRET_ACCESS_KEY}}"
redirect = {"true" if redirect else "false"}

[cluster]
redis_url = "{redis_url}"
"""


def start_replica(
    directory: Path,
    gitlab_url: str,
    s3: S3Server,
    redis: RedisServer,
    *,
    extra: str = "",
    redirect: bool = False,
    sources: list[dict[str, object]] | None = None,
) -> ProxyProcess:
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(
        directory,
        gitlab_url,
        sources or [{"name": "platform", "gitlab_project": 11}],
        token=TOKEN,
        extra=cluster_config(s3, redis.url, redirect=redirect) + extra,
    )
    env = {"S3_ACCESS_KEY_ID": s3.access_key_id, "S3_SECRET_ACCESS_KEY": s3.secret_access_key}
    return start_proxy(config, env=env)


Backing = tuple[RedisServer, S3Server]


@pytest.fixture(scope="module")
def module_backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backing]:
    directory = tmp_path_factory.mktemp("backing")
    with running_redis(directory / "redis") as redis, running_seaweedfs(directory / "s3") as s3:
        yield redis, s3


@pytest.fixture
def backing(module_backing: Backing) -> Backing:
    """The module's Redis and SeaweedFS, emptied for this test (a test that stops either starts
    its own instead)."""
    redis, s3 = module_backing
    client = redis.client()
    try:
        client.flushall()
    finally:
        client.close()
    store = s3.store()
    for batch in obstore.list(store):
        obstore.delete(store, [entry["path"] for entry in batch])
    assert not list(obstore.list(store))
    return module_backing


@contextmanager
def running_cluster(
    tmp_path: Path,
    gitlab: GitLabDouble,
    extra: str = "",
    *,
    backing: Backing | None = None,
    redirect: bool = False,
    sources: list[dict[str, object]] | None = None,
) -> Iterator[Cluster]:
    with ExitStack() as stack:
        if backing:
            redis, s3 = backing
        else:
            redis = stack.enter_context(running_redis(tmp_path / "redis"))
            s3 = stack.enter_context(running_seaweedfs(tmp_path / "seaweedfs"))
        server = stack.enter_context(serve(gitlab.app))
        replicas = []
        for name in ("a", "b"):
            replica = start_replica(
                tmp_path / name,
                server.url,
                s3,
                redis,
                extra=extra,
                redirect=redirect,
                sources=sources,
            )
            stack.callback(replica.stop)
            replicas.append(replica)
        dirs = {"a": tmp_path / "a", "b": tmp_path / "b"}
        yield Cluster(replicas[0], replicas[1], gitlab, server, redis, s3, dirs)
        for replica in replicas:  # no credential in any log line
            log = replica.log()
            assert s3.secret_access_key not in log and s3.access_key_id not in log
            assert "Traceback" not in log, log


def cli(cluster: Cluster, replica: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A command line tool with `replica`'s configuration."""
    config = cluster.replica_dirs[replica] / "proxy.toml"
    env = {
        **os.environ,
        "S3_ACCESS_KEY_ID": cluster.s3.access_key_id,
        "S3_SECRET_ACCESS_KEY": cluster.s3.secret_access_key,
    }
    command = [sys.executable, "-m", "gitlab_pypi_proxy", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def whole_downloads(gitlab: GitLabDouble, filename: str = "") -> int:
    """GETs of a file (of `filename`) from GitLab, not counting ranged reads of a wheel's
    METADATA."""
    files = gitlab.matching(rf"/api/v4/projects/11/packages/pypi/files/.*{filename}")
    return sum(1 for r in files if "range" not in r.headers)


def files_of(replica: ProxyProcess, name: str) -> list[dict]:
    page = httpx2.get(f"{replica.url}/simple/{name}/", headers=JSON, timeout=30)
    assert page.status_code == 200, page.text
    return page.json()["files"]


def file_url(replica: ProxyProcess, name: str, entry: dict) -> str:
    return f"{replica.url}/simple/{name}/{entry['url']}"


HERDS = 5  # rounds: a race that struck 3 runs in 5 strikes one of 5 rounds but 1% of the time


def test_cold_herds_over_both_replicas_reach_gitlab_once_each(
    tmp_path: Path, backing: Backing
) -> None:
    """Round after round, 20 clients at once (each asks for the page, then the file, as pip
    does) spread over both replicas ask for one cold file that GitLab answers after 300 ms."""
    gitlab = app_taking_uploads(TOKEN)
    wheels = [make_wheel(f"herd{n}-pkg", "1.0", pad_bytes=2**20) for n in range(HERDS)]
    for n, (filename, data) in enumerate(wheels):
        gitlab.add_package_file(11, f"herd{n}-pkg", "1.0", filename, data)
    gitlab.latency_for[r"/api/v4/projects/11/packages/pypi/files/.*"] = 0.3
    with running_cluster(tmp_path, gitlab, backing=backing) as cluster:
        for n, (filename, data) in enumerate(wheels):
            name = f"herd{n}-pkg"

            def download(k: int, name: str = name) -> tuple[int, str, str]:
                replica = cluster.replicas[k % 2]
                entry = files_of(replica, name)[0]
                answer = httpx2.get(file_url(replica, name, entry), timeout=120)
                return answer.status_code, hashlib.sha256(answer.content).hexdigest(), replica.url

            with ThreadPoolExecutor(20) as pool:
                results = list(pool.map(download, range(20)))
            digest = hashlib.sha256(data).hexdigest()
            assert all(r[:2] == (200, digest) for r in results), (name, results)
            assert whole_downloads(gitlab, filename) == 1, name
            stored = obstore.get(cluster.s3.store(), f"files/{digest}").bytes()
            assert hashlib.sha256(bytes(stored)).hexdigest() == digest


def test_what_a_cached_is_served_by_b_with_gitlab_stopped(tmp_path: Path, backing: Backing) -> None:
    with running_cluster(tmp_path, app_taking_uploads(TOKEN), backing=backing) as cluster:
        home = tmp_path / "home"
        first = pip_install(f"{cluster.a.url}/simple/", tmp_path / "one", "app-main", home=home)
        assert first.returncode == 0, first.stderr
        cluster.gitlab_server.stop()
        clear_client_caches(home)
        # B never asked GitLab for anything: pages from Redis, files from the bucket
        second = pip_install(f"{cluster.b.url}/simple/", tmp_path / "two", "app-main", home=home)
        assert second.returncode == 0, second.stderr
        installed = {p.name for p in (tmp_path / "two").iterdir()}
        assert {"app_main-1.0.dist-info", "app_dep-2.0.dist-info"} <= installed
        entry = files_of(cluster.b, "app-dep")[0]
        answer = httpx2.get(file_url(cluster.b, "app-dep", entry))
        assert answer.status_code == 200 and answer.headers["x-cache"] == "HIT"

        # the cache commands work on the bucket, from either replica's configuration
        stats = cli(cluster, "b", "cache", "stats")
        assert "files: 2 entries" in stats.stdout, stats.stdout + stats.stderr
        verified = cli(cluster, "b", "cache", "verify")
        assert "verified 2 files, dropped 0" in verified.stdout, verified.stderr
        bundle = tmp_path / "bundle.tar"
        exported = cli(cluster, "a", "cache", "export", str(bundle))
        assert "exported 2 files" in exported.stdout, exported.stderr
        key = f"files/{entry['hashes']['sha256']}"
        obstore.delete(cluster.s3.store(), key)  # lost from the bucket: the bundle restores it
        imported = cli(cluster, "b", "cache", "import", str(bundle))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "imported 2 files" in imported.stdout, imported.stdout
        assert obstore.head(cluster.s3.store(), key)["size"] == len(answer.content)
        for output in (stats, verified, exported, imported):
            assert cluster.s3.secret_access_key not in output.stdout + output.stderr


OPS = ("ops", "ops-password")
ADMIN_CONFIG = f"""
[[users]]
name = "{OPS[0]}"
password = "{OPS[1]}"

[auth]
admins = ["{OPS[0]}"]
"""


def test_what_a_changes_shows_through_b_at_once(tmp_path: Path, backing: Backing) -> None:
    """An upload, and the operator API's refresh, yank and purge."""
    config = UPLOADER_CONFIG + ADMIN_CONFIG
    gitlab = app_taking_uploads(TOKEN)
    with running_cluster(tmp_path, gitlab, config, backing=backing) as cluster:
        assert [f["filename"] for f in files_of(cluster.b, "app-dep")] == [
            "app_dep-2.0-py3-none-any.whl"
        ]  # B holds the page now, fresh for index_ttl (300 s)
        filename, answer = upload_wheel(cluster.a.url, "app-dep", "2.1")
        assert answer.status_code == 201, answer.text
        wait_until(
            lambda: filename in [f["filename"] for f in files_of(cluster.b, "app-dep")],
            "B to list the upload",
            5,
        )
        home = tmp_path / "home"
        result = pip_install(f"{cluster.b.url}/simple/", tmp_path / "t", "app-dep==2.1", home=home)
        assert result.returncode == 0, result.stderr

        # prefetch fills the bucket too
        prefetched = cli(cluster, "a", "prefetch", "--package", "app-main")
        assert prefetched.returncode == 0, prefetched.stdout + prefetched.stderr
        assert "fetched: 1 (" in prefetched.stdout, prefetched.stdout
        digest = files_of(cluster.b, "app-main")[0]["hashes"]["sha256"]
        assert obstore.head(cluster.s3.store(), f"files/{digest}")["size"] > 0

        # a release published straight to GitLab, refreshed through A: listed by B at once
        cluster.gitlab.add_package_file(11, "app-dep", "2.2", *make_wheel("app-dep", "2.2"))
        refreshed = httpx2.post(f"{cluster.a.url}/-/refresh/app-dep", auth=OPS, timeout=30)
        assert refreshed.status_code == 200, refreshed.text
        wait_until(
            lambda: (
                "app_dep-2.2-py3-none-any.whl"
                in {f["filename"] for f in files_of(cluster.b, "app-dep")}
            ),
            "B to list the refreshed release",
            5,
        )
        # a yank through A: listed yanked by B at once
        yanked = httpx2.put(
            f"{cluster.a.url}/-/yank/app-dep/2.1", json={"reason": "bad build"}, auth=OPS
        )
        assert yanked.status_code == 204, yanked.text
        wait_until(
            lambda: (
                {f["filename"]: f.get("yanked") for f in files_of(cluster.b, "app-dep")}[filename]
                == "bad build"
            ),
            "B to list the yank",
            5,
        )
        # a purge through A: the bucket's object and B's own sidecar of it go
        main = files_of(cluster.b, "app-main")[0]
        metadata = httpx2.get(file_url(cluster.b, "app-main", main) + ".metadata", timeout=60)
        assert metadata.status_code == 200
        b_metadata = MetadataStore(cluster.replica_dirs["b"] / "cache")
        try:
            assert asyncio.run(b_metadata.get("platform", digest)) is not None
            purged = httpx2.delete(f"{cluster.a.url}/-/files/{digest}", auth=OPS, timeout=30)
            assert purged.status_code == 204, purged.text
            with pytest.raises(FileNotFoundError):
                obstore.head(cluster.s3.store(), f"files/{digest}")
            wait_until(
                lambda: asyncio.run(b_metadata.get("platform", digest)) is None,
                "B to drop its sidecar of the purged file",
                5,
            )
        finally:
            b_metadata.close()
        again = httpx2.get(file_url(cluster.b, "app-main", main), timeout=60)
        assert (again.status_code, again.headers["x-cache"]) == (200, "MISS")


def test_with_redis_stopped_both_keep_serving_warm_pages_and_files(tmp_path: Path) -> None:
    with running_cluster(tmp_path, app_taking_uploads(TOKEN)) as cluster:
        home = tmp_path / "home"
        for n, replica in enumerate(cluster.replicas):
            done = pip_install(f"{replica.url}/simple/", tmp_path / f"w{n}", "app-main", home=home)
            assert done.returncode == 0, done.stderr
        cluster.redis.stop()
        for n, replica in enumerate(cluster.replicas):
            clear_client_caches(home)
            done = pip_install(f"{replica.url}/simple/", tmp_path / f"r{n}", "app-main", home=home)
            assert done.returncode == 0, done.stderr

            def degraded(replica: ProxyProcess = replica) -> dict:
                body = httpx2.get(f"{replica.url}/readyz", timeout=10).json()
                return body if not body["shared"]["redis"]["reachable"] else {}

            body = wait_until(degraded, "/readyz to say Redis is down", 30)
            assert body["ready"] and "degraded" in body["mode"] and "Redis" in body["mode"]
            metrics = httpx2.get(f"{replica.url}/metrics", timeout=10).text
            assert 'gitlab_pypi_proxy_shared_store_failures_total{store="redis"}' in metrics
            assert "Redis failing" in replica.log()
        status = httpx2.get(f"{cluster.a.url}/", timeout=10)
        assert status.status_code == 200 and "Redis" in status.text


def test_with_the_s3_server_stopped_files_still_install(tmp_path: Path) -> None:
    with running_cluster(tmp_path, app_taking_uploads(TOKEN)) as cluster:
        for replica in cluster.replicas:
            files_of(replica, "app-main")  # pages cached; no file is
        cluster.s3.stop()
        home = tmp_path / "home"
        for n, replica in enumerate(cluster.replicas):
            done = pip_install(f"{replica.url}/simple/", tmp_path / f"s{n}", "app-main", home=home)
            assert done.returncode == 0, done.stderr
            clear_client_caches(home)
            entry = files_of(replica, "app-dep")[0]
            answer = httpx2.get(file_url(replica, "app-dep", entry), timeout=60)
            assert answer.status_code == 200 and answer.headers["x-cache"] == "BYPASS"
            assert hashlib.sha256(answer.content).hexdigest() == entry["hashes"]["sha256"]
            body = httpx2.get(f"{replica.url}/readyz", timeout=10).json()
            assert body["ready"] and not body["shared"]["s3"]["reachable"]
            assert cluster.s3.secret_access_key not in json.dumps(body)


def test_start_refuses_a_missing_bucket_and_says_so(tmp_path: Path, backing: Backing) -> None:
    redis, running = backing
    s3 = dataclasses.replace(running, bucket="no-such-bucket")
    with pytest.raises(RuntimeError) as failed:
        start_replica(tmp_path / "r", "https://gitlab.example.com", s3, redis)
    message = str(failed.value)
    assert "storage.bucket: S3 bucket 'no-such-bucket'" in message
    assert "does not exist" in message
    assert s3.secret_access_key not in message


def test_a_replica_starts_without_redis_and_says_so(tmp_path: Path, backing: Backing) -> None:
    _, s3 = backing
    redis = RedisServer(tmp_path / "redis", port=free_port())  # never started: nothing listens
    replica = start_replica(tmp_path / "r", "https://gitlab.example.com", s3, redis)
    try:
        assert "Redis cannot be reached" in replica.log()
        body = httpx2.get(f"{replica.url}/readyz", timeout=10).json()
        assert body["shared"]["s3"]["reachable"] and not body["shared"]["redis"]["reachable"]
        assert "Redis" in body["mode"]
    finally:
        replica.stop()


def test_redirect_hands_out_presigned_urls_only_after_the_read_check(
    tmp_path: Path, backing: Backing
) -> None:
    users = """
[auth]
anonymous_read = false

[[users]]
name = "reader"
password = "reader-password"

[[users]]
name = "outsider"
password = "outsider-password"
read = ["other"]
"""
    gitlab = app_taking_uploads(TOKEN)
    gitlab.add_project(12, "acme/other")
    gitlab.add_token(TOKEN, read={11, 12})
    shared = make_wheel("shared-lib", "1.0")  # legitimately in both projects
    for project in (11, 12):
        gitlab.add_package_file(project, "shared-lib", "1.0", *shared)
    # a developer of acme/other lists app-dep's digest for a file of its own (GitLab stores the
    # sha256 an upload claims)
    app_dep = next(f for f in gitlab.files if f.name == "app-dep")
    forged = "other_tool-1.0-py3-none-any.whl"
    gitlab.add_package_file(12, "other-tool", "1.0", forged, b"its own", sha256=app_dep.sha256)
    sources = [
        {"name": "platform", "gitlab_project": 11},
        {"name": "other", "gitlab_project": 12},
    ]
    with running_cluster(
        tmp_path, gitlab, users, backing=backing, redirect=True, sources=sources
    ) as cluster:
        reader, outsider_auth = ("reader", "reader-password"), ("outsider", "outsider-password")
        url = pinned_url(cluster.a.url, gitlab, "app-dep")  # no page: no look-ahead
        first = httpx2.get(url, auth=reader, timeout=60)  # not in the bucket yet: the proxy
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        for replica_url in (cluster.a.url, cluster.b.url):
            there = url.replace(cluster.a.url, replica_url)
            anonymous = httpx2.get(there)
            assert anonymous.status_code == 401 and "location" not in anonymous.headers
            outsider = httpx2.get(there, auth=outsider_auth)
            assert outsider.status_code == 404 and "location" not in outsider.headers
            redirected = httpx2.get(there, auth=reader)
            assert redirected.status_code == 307, redirected.text
            location = redirected.headers["location"]
            assert location.startswith(cluster.s3.endpoint_url)
            assert cluster.s3.secret_access_key not in location
            assert redirected.headers["cache-control"] == "private, no-store"
            assert httpx2.get(location, timeout=60).content == first.content
            # the forged listing: verified against acme/other on each replica, never redirected
            refused = httpx2.get(
                f"{replica_url}/files/{app_dep.sha256}/{forged}", auth=outsider_auth, timeout=60
            )
            assert refused.status_code == 502 and "location" not in refused.headers
            assert refused.text == f"source other: {forged} sha256 does not match its listing\n"

        # a file in both projects: the outsider's source delivers it once, for both replicas
        shared_url = f"/files/{hashlib.sha256(shared[1]).hexdigest()}/{shared[0]}"
        kept = httpx2.get(cluster.a.url + shared_url, auth=reader, timeout=60)
        assert kept.status_code == 200 and kept.content == shared[1]
        for replica_url in (cluster.a.url, cluster.b.url):
            verified = httpx2.get(replica_url + shared_url, auth=outsider_auth, timeout=60)
            assert verified.status_code == 307, verified.text
        from_other = gitlab.matching(rf"/api/v4/projects/12/packages/pypi/files/.*/{shared[0]}")
        assert len(from_other) == 1
        home = tmp_path / "home"
        index = cluster.b.url.replace("http://", "http://reader:reader-password@") + "/simple/"
        result = pip_install(index, tmp_path / "t", "app-dep", home=home)
        assert result.returncode == 0, result.stderr
