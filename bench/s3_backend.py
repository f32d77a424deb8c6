"""Scenario 8: the S3 backend against local disk on the same machine: a warm 100 MiB
file (4 curl processes at once) and a cold herd (50 concurrent downloads of one uncached 50 MiB
file), each proxy fresh, the S3 one on SeaweedFS and Redis started here on loopback (the tests'
own servers, tests/backing_services.py) and stopped by their pids afterwards."""

from contextlib import ExitStack
from pathlib import Path

from bench import dataset, load, scenarios, servers
from bench.processes import Processes
from bench.scenarios import Samples, Settings
from bench.servers import Target, Upstream
from tests.backing_services import running_redis, running_seaweedfs

LOCAL, S3 = "proxy, local disk", "proxy, S3 + Redis"
HERD_FILE = f"bench-herd-{dataset.HERD_FILES - 1}"  # scenario 4 uses the first ones


def run(
    procs: Processes,
    work: Path,
    up: Upstream,
    files: list[dataset.File],
    settings: Settings,
    latency: float,
) -> Samples:
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis(work / "s3-bench-redis"))
        s3 = stack.enter_context(running_seaweedfs(work / "s3-bench-seaweedfs"))
        extra = f"""
[storage]
backend = "s3"
endpoint_url = "{s3.endpoint_url}"
bucket = "{s3.bucket}"
region = "{s3.region}"
access_key_id = "${{S3_ACCESS_KEY_ID}}"
secret_access_key = "${{S3_SECRET_ACCESS_KEY}}"

[cluster]
redis_url = "{redis.url}"
"""
        env = {"S3_ACCESS_KEY_ID": s3.access_key_id, "S3_SECRET_ACCESS_KEY": s3.secret_access_key}
        project = (dataset.MAIN_PROJECT,)
        targets: list[Target] = []
        for label, more, environment in ((LOCAL, "", None), (S3, extra, env)):
            target = servers.start_proxy(
                procs, work, up, project, label, extra=more, env=environment
            )
            stack.callback(procs.stop, target.running)
            targets.append(target)
        samples = _warm_big(targets, files, settings)
        herd = scenarios.herd_of(up, targets, dataset.find(files, HERD_FILE), latency)
        return {**samples, **herd}


def _warm_big(targets: list[Target], files: list[dataset.File], settings: Settings) -> Samples:
    samples: Samples = {}
    file = dataset.find(files, "bench-big")
    for target in targets:
        url = load.file_url(target.index_url, "bench-big", file.filename)
        scenarios.warm_file(url)
        for _ in range(settings.repeats):
            rate, failed = load.curl_rate(url, processes=4, each=2)
            scenarios.add(samples, "100 MiB file warm, MiB/s", target.name, rate / scenarios.MIB)
            scenarios.add(samples, "100 MiB file warm, failed", target.name, failed)
    return samples
