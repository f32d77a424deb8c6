"""Upload a 100 MiB wheel with the real twine through the proxy and report the proxy's peak memory.

    .venv/bin/python -m bench.upload_memory [--mib 100]

The proxy runs as users run it (`python -m proxy serve`, one worker); the GitLab double runs in
this process. The proxy's peak resident memory (VmHWM) is read before and after the upload: a
proxy that held the file in memory would grow by about the file's size.
"""

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from tests.clients import twine_upload
from tests.dists import make_wheel
from tests.gitlab_double import GitLabDouble
from tests.proxy_process import start_proxy, write_config
from tests.servers import serve

PASSWORD = "bench-password"
TOKEN = "gldt-bench"


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    args = parser.parse_args()
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token(TOKEN, write={11})
    extra = f"""
[upload]
default_source = "platform"
[[users]]
name = "ci"
password = "{PASSWORD}"
upload = ["platform"]
gitlab_token = "{TOKEN}"
"""
    with tempfile.TemporaryDirectory() as temp, serve(double.app) as gitlab:
        directory = Path(temp)
        config = write_config(
            directory, gitlab.url, [{"name": "platform", "gitlab_project": 11}], extra=extra
        )
        name, data = make_wheel("big-pkg", "1.0", pad_bytes=args.mib * 2**20)
        wheel = directory / name
        wheel.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        del data
        proxy = start_proxy(config)
        try:
            before = peak_rss(proxy.process.pid)
            started = time.perf_counter()
            result = twine_upload(
                f"{proxy.url}/upload/", [wheel], user="ci", password=PASSWORD, home=directory / "h"
            )
            seconds = time.perf_counter() - started
            after = peak_rss(proxy.process.pid)
        finally:
            proxy.stop()
        if result.returncode != 0:
            raise SystemExit(f"upload failed:\n{result.stdout}{result.stderr}")
        (upload,) = double.uploads()
        assert upload.fields["sha256_digest"] == digest, "wrong digest upstream"
        size = wheel.stat().st_size
        print(f"uploaded {size / 2**20:.1f} MiB in {seconds:.2f} s (twine → proxy → GitLab double)")
        print(f"proxy peak RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
        print(f"growth {(after - before) / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file")


if __name__ == "__main__":
    main()
