"""What loading an OSV export of the real all.zip's size costs: time, memory, query speed.

`python -m bench.osv_load [--malicious N]` writes tests/osv_export.py's realistic export to a
temporary directory and prints the figures quoted in gitlab_pypi_proxy/policy/osv.py's docstring.
"""

import argparse
import json
import resource
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

from gitlab_pypi_proxy.policy import osv
from tests.osv_export import realistic_export


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--malicious", type=int, default=25_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = realistic_export(Path(tmp) / "all.zip", malicious=args.malicious)
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            unzipped = sum(m.file_size for m in members)
            listed = sum(
                len(a.get("versions", []))
                for m in members
                for a in json.loads(archive.read(m))["affected"]
            )
        print(f"export: {len(members)} advisories, {listed} listed versions")
        print(f"        {path.stat().st_size / 1e6:.0f} MB zipped, {unzipped / 1e6:.0f} MB JSON")

        before = _rss_mib()
        started, cpu = time.perf_counter(), time.process_time()
        index = osv.load(path)
        print(
            f"load: {time.perf_counter() - started:.1f} s wall, "
            f"{time.process_time() - cpu:.1f} s CPU, RSS +{_rss_mib() - before:.0f} MiB"
        )
        print(f"      {index.stats}")

        tracemalloc.start()
        again = osv.load(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"      tracemalloc peak during a load: {peak / 2**20:.0f} MiB")
        del again

        biggest = max(index.by_name, key=lambda n: len(index.by_name[n]))
        versions = [f"0.{minor}.{patch}" for minor in range(1, 40) for patch in range(10)]
        count = len(index.by_name[biggest])
        started = time.perf_counter()
        hits = sum(bool(index.reason(biggest, v)) for v in versions)
        took = (time.perf_counter() - started) / len(versions)
        print(f"query: {biggest} ({count} advisories): {took * 1e3:.2f} ms for one version")
        started = time.perf_counter()
        page = index.reasons(biggest, versions)
        took = time.perf_counter() - started
        print(
            f"       a page of {len(versions)} versions at once: {took * 1e3:.1f} ms "
            f"({len(page)} affected, {hits} one by one)"
        )
        started = time.perf_counter()
        for i in range(10_000):
            index.reason(f"typo-squat-{i}", "0.0.0")
        each = (time.perf_counter() - started) / 10_000
        print(f"query: a project with one advisory: {each * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
