"""The benchmark's data set, built once on disk: the files every server serves, the pages nginx
serves as they are, and a manifest the upstream double and the scenarios read.

Project 1 (`bench/main`) holds 200 packages of 10 wheels each plus the large files; projects 2-11
each hold one file of every `spread-N` package, for the cold fan-out over ten sources. Project 20
holds the long histories of scenario 7, built in memory by the upstream (`bench.upstream`).
"""

import hashlib
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gitlab_pypi_proxy.demo.dists import make_wheel

VERSION = 4  # bump when the layout below changes: a stale data set is rebuilt
MAIN_PROJECT = 1
SPREAD_PROJECTS = tuple(range(2, 12))
VERSIONS_PROJECT = 20
HISTORY = 2000  # versions of each long history
LONG_HISTORIES = {  # name -> files per version
    "bench-nightly": 1,
    "bench-wide": 5,  # 10,000 files
    "bench-first": 1,  # installed by pip before any page of it was asked for
}
SHORT_NAME = "bench-core"  # 3 versions; `package_name` also matches the plugins' names
SHORT_NAME_OTHERS = 2500
PACKAGES = 200
VERSIONS = 10
SPREAD_NAMES = 10
TREES = 4  # dependency trees: a top package, 5 it requires, 2 each of those require (16)
TREE_WIDTH, TREE_LEAVES = 5, 2
TREE_SIZE = 1 + TREE_WIDTH * (1 + TREE_LEAVES)
HERD_FILES = 3  # one uncached 50 MiB file per repetition of the herd
MIB = 2**20
LARGE = {  # package name -> padding bytes of its one wheel
    "bench-mib": MIB,
    "bench-big": 100 * MIB,
    "bench-huge": 1024 * MIB,
    **{f"bench-herd-{i}": 50 * MIB for i in range(HERD_FILES)},
}


@dataclass(frozen=True)
class File:
    project: int
    name: str
    version: str
    filename: str
    sha256: str
    size: int


def package_name(index: int) -> str:
    return f"bench-pkg-{index:03d}"


def tree_top(tree: int) -> str:
    """The package that requires the rest of dependency tree `tree`."""
    return f"bench-tree-{tree}-top"


def _tree(tree: int) -> dict[str, list[str]]:
    """Package name -> the names it requires, for dependency tree `tree`."""
    middle = [f"bench-tree-{tree}-a{i}" for i in range(TREE_WIDTH)]
    packages = {tree_top(tree): middle}
    for i, name in enumerate(middle):
        leaves = [f"bench-tree-{tree}-b{i}{j}" for j in range(TREE_LEAVES)]
        packages[name] = leaves
        packages.update((leaf, []) for leaf in leaves)
    return packages


def file_path(root: Path, file: File) -> Path:
    return root / "files" / file.sha256 / file.filename


def _store(
    root: Path,
    project: int,
    name: str,
    version: str,
    pad: int = 0,
    requires: list[str] | None = None,
) -> File:
    filename, content = make_wheel(name, version, pad_bytes=pad, requires_dist=requires)
    digest = hashlib.sha256(content).hexdigest()
    file = File(project, name, version, filename, digest, len(content))
    path = file_path(root, file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return file


def _html_page(name: str, files: list[File]) -> str:
    links = "\n".join(
        f'    <a href="../../files/{f.sha256}/{f.filename}#sha256={f.sha256}">{f.filename}</a><br>'
        for f in files
    )
    return (
        f"<!DOCTYPE html>\n<html>\n  <head><title>Links for {html.escape(name)}</title></head>\n"
        f"  <body>\n    <h1>Links for {html.escape(name)}</h1>\n{links}\n  </body>\n</html>\n"
    )


def _json_page(name: str, files: list[File]) -> str:
    return json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": name,
            "files": [
                {
                    "filename": f.filename,
                    "url": f"../../files/{f.sha256}/{f.filename}",
                    "hashes": {"sha256": f.sha256},
                }
                for f in files
            ],
        }
    )


def _write_pages(root: Path, files: list[File]) -> None:
    """Pre-rendered PEP 503 and PEP 691 pages of project 1, as nginx serves them from disk."""
    by_name: dict[str, list[File]] = {}
    for f in files:
        if f.project in (MAIN_PROJECT, SPREAD_PROJECTS[0]):
            by_name.setdefault(f.name, []).append(f)
    for name, listed in by_name.items():
        directory = root / "simple" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "index.html").write_text(_html_page(name, listed))
        (directory / "index.json").write_text(_json_page(name, listed))
    links = "\n".join(f'    <a href="{n}/">{n}</a><br>' for n in sorted(by_name))
    (root / "simple" / "index.html").write_text(
        f"<!DOCTYPE html>\n<html>\n  <body>\n{links}\n  </body>\n</html>\n"
    )


def build(root: Path) -> list[File]:
    """The data set under `root`, built unless a manifest of this VERSION is there already."""
    manifest = root / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("version") == VERSION:
            return [File(**f) for f in data["files"]]
    files = []
    for index in range(PACKAGES):
        for minor in range(VERSIONS):
            files.append(_store(root, MAIN_PROJECT, package_name(index), f"1.0.{minor}"))
    for name, pad in LARGE.items():
        files.append(_store(root, MAIN_PROJECT, name, "1.0.0", pad))
    for tree in range(TREES):
        for name, requires in _tree(tree).items():
            files.append(_store(root, MAIN_PROJECT, name, "1.0.0", requires=requires))
    for index in range(SPREAD_NAMES):
        for project in SPREAD_PROJECTS:
            files.append(_store(root, project, f"spread-{index}", f"1.{project}.0"))
    _write_pages(root, files)
    manifest.write_text(json.dumps({"version": VERSION, "files": [asdict(f) for f in files]}))
    return files


def find(files: list[File], name: str) -> File:
    """The first (lowest version) file of a package."""
    return next(f for f in files if f.name == name)
