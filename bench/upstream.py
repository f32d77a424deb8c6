"""The upstream of every server under test: the GitLab double from tests/, loaded with the data
set, run in its own process with uvicorn (`python -m bench.upstream --data DIR --port N`; without
`--data`, the small stand-in of the real-index scenario).

Wrapped, not changed: a trailing slash on a simple page is dropped (pip, proxpi and devpi ask for
`.../simple/name/`, which real GitLab answers), and `/_bench/...` lets the harness set the
latency and count the requests the double received (by path prefix, or by a regular expression
the whole path matches; optionally only those that arrived by a given time.monotonic()).
"""

import argparse
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.responses import JSONResponse

from bench import dataset
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble

TOKEN = "bench-token"  # read and write on every project; the projects are public as well
_SIMPLE_SLASH = re.compile(r"(/packages/pypi/simple(?:/[^/]+)?)/$")


def make_double(data: Path, url: str) -> GitLabDouble:
    double = GitLabDouble(external_url=url, forward_missing=True)
    projects = (dataset.MAIN_PROJECT, *dataset.SPREAD_PROJECTS, dataset.VERSIONS_PROJECT)
    for project in projects:
        double.add_project(project, f"bench/p{project}", public=True)
    double.add_token(TOKEN, write=set(projects))
    for f in dataset.build(data):
        content = dataset.file_path(data, f).read_bytes()
        double.add_package_file(f.project, f.name, f.version, f.filename, content, sha256=f.sha256)
    add_long_histories(double)
    return double


def add_long_histories(double: GitLabDouble) -> None:
    """Project VERSIONS_PROJECT: names with 2,000 versions (one wheel each, or 5 files each), and
    a short name with 3 old versions that 2,500 newer packages' names contain. Built in memory
    at start (a few seconds): only these servers' upstream ever serves them."""
    project, first = dataset.VERSIONS_PROJECT, datetime(2024, 1, 1, tzinfo=UTC)
    for name, files in dataset.LONG_HISTORIES.items():
        double.add_versions(project, name, dataset.HISTORY, files_per_version=files, first=first)
    double.add_versions(project, dataset.SHORT_NAME, 3, first=first)
    for n in range(dataset.SHORT_NAME_OTHERS):
        name = f"{dataset.SHORT_NAME}-plugin-{n}"
        filename, content = make_wheel(name, "1.0")
        created = first + timedelta(days=1, minutes=n)
        double.add_package_file(project, name, "1.0", filename, content, created_at=created)


def stand_in(url: str) -> GitLabDouble:
    """The GitLab of the real-index scenario (bench.real_index): one project holding one small
    private package, asked about every name an install needs before the public index is."""
    double = GitLabDouble(external_url=url)
    double.add_project(dataset.MAIN_PROJECT, "bench/private", public=True)
    double.add_token(TOKEN, write={dataset.MAIN_PROJECT})
    for version in ("1.0", "1.1"):
        filename, content = make_wheel("bench-private", version)
        double.add_package_file(dataset.MAIN_PROJECT, "bench-private", version, filename, content)
    return double


def wrap(double: GitLabDouble) -> Any:
    inner = double.app

    async def control(scope: dict[str, Any], receive: Any, send: Any) -> None:
        query = dict(parse_qsl(scope["query_string"].decode()))
        if scope["path"] == "/_bench/latency":
            double.latency = float(query["seconds"])
        elif scope["path"] == "/_bench/reset":
            double.requests.clear()
        prefix = query.get("prefix", "/")
        method = query.get("method", "GET")
        if "pattern" in query:
            matching = double.matching(query["pattern"], method)
        else:
            matching = [
                r for r in double.requests if r.method == method and r.path.startswith(prefix)
            ]
        if "until" in query:  # arrived by then (time.monotonic(), the same in every process)
            matching = [r for r in matching if r.at <= float(query["until"])]
        answer = {
            "latency": double.latency,
            "count": len(matching),
            # whole-file downloads: a proxy's ranged reads of a wheel's end (PEP 658) are not one
            "whole": sum(1 for r in matching if "range" not in r.headers),
        }
        await JSONResponse(answer)(scope, receive, send)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"].startswith("/_bench/"):
                return await control(scope, receive, send)
            stripped = _SIMPLE_SLASH.sub(r"\1", scope["path"])
            if stripped != scope["path"]:
                raw = scope.get("raw_path") or scope["path"].encode()
                scope = {**scope, "path": stripped, "raw_path": raw.rstrip(b"/")}
        await inner(scope, receive, send)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="the data set (else: the stand-in alone)")
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    double = stand_in(url) if args.data is None else make_double(args.data, url)
    uvicorn.run(
        wrap(double),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="off",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
