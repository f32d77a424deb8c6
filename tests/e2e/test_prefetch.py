"""End to end, prefetch what a lock file names, then install it with every upstream gone.

One GitLab double with two projects and a public index (pypiserver) with a package no GitLab
project has; `uv pip compile --generate-hashes` (and `--format pylock.toml`) through an online
proxy writes the lock files; `gitlab-pypi-proxy prefetch` fills a second, empty cache from them;
with the double and pypiserver stopped, pip and `uv pip sync` install the set through an
`offline = true` proxy on that cache, and again from a cache imported from a bundle.
"""

import hashlib
import io
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_sdist, make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import isolated_env, run, uv_binary
from tests.proxy_process import start_proxy, write_config
from tests.public_index import pypiserver
from tests.servers import serve

TOKEN = "glpat-prefetch"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
GITLAB_SOURCES = [
    {"name": "platform", "gitlab_project": 11},
    {"name": "tools", "gitlab_project": 12},
]
INSTALLED = {
    "app_main-1.0.dist-info",
    "app_dep-2.0.dist-info",
    "tool_x-1.1.dist-info",
    "pub_lib-1.0.dist-info",  # from the public index only
}
NOWHERE = "http://127.0.0.1:9"  # nothing listens


def _sources(public_url: str) -> list[dict[str, object]]:
    return [*GITLAB_SOURCES, {"name": "public", "url": public_url}]


def _double() -> GitLabDouble:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_project(12, "acme/tools")
    double.add_token(TOKEN, read={11, 12})
    for project, name, version, deps in [
        (11, "app-main", "1.0", ["app-dep", "tool-x", "pub-lib"]),
        (11, "app-dep", "2.0", []),
        (12, "tool-x", "1.0", []),
        (12, "tool-x", "1.1", []),
        (12, "unrelated", "3.0", []),
    ]:
        filename, data = make_wheel(name, version, requires_dist=deps)
        double.add_package_file(project, name, version, filename, data)
    filename, data = make_sdist("app-dep", "2.0")
    double.add_package_file(11, "app-dep", "2.0", filename, data)
    return double


def prefetch(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "gitlab_pypi_proxy",
        "prefetch",
        "--config",
        str(config),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def cache_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gitlab_pypi_proxy", "cache", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Prefetched:
    root: Path
    config: Path  # the cache filled by prefetch, GitLab and the public index now gone
    requirements: Path
    pylock: Path
    uv_lock: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    from_pylock: subprocess.CompletedProcess[str]
    from_uv_lock: subprocess.CompletedProcess[str]
    gitlab_calls_when_stopped: int
    double: GitLabDouble


def _compile(index: str, requirements_in: Path, out: Path, home: Path, *extra: str) -> None:
    command = [uv_binary(), "pip", "compile", "--python", sys.executable, "--index-url", index]
    command += ["--generate-hashes", "--no-header", *extra, str(requirements_in), "-o", str(out)]
    result = run(command, isolated_env(home))
    assert result.returncode == 0, result.stderr


def _lock_project(index: str, project: Path, home: Path) -> Path:
    """A real uv.lock: `uv lock` of a project that depends on app-main."""
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "build"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        'dependencies = ["app-main"]\n'
    )
    command = [uv_binary(), "lock", "--python", sys.executable, "--default-index", index]
    result = run([*command, "--directory", str(project)], isolated_env(home))
    assert result.returncode == 0, result.stderr
    return project / "uv.lock"


@pytest.fixture(scope="module")
def prefetched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prefetched]:
    root = tmp_path_factory.mktemp("prefetch")
    double = _double()
    with serve(double.app) as server, pypiserver(root / "public-wheels") as public:
        public.add(*make_wheel("pub-lib", "1.0"))
        sources = _sources(public.url)
        (root / "compile").mkdir()
        online_config = write_config(root / "compile", server.url, sources, token=TOKEN)
        online = start_proxy(online_config)
        try:
            requirements_in = root / "requirements.in"
            requirements_in.write_text("app-main\n")
            requirements = root / "requirements.txt"
            pylock = root / "pylock.toml"
            index = f"{online.url}/simple/"
            _compile(index, requirements_in, requirements, root / "home")
            _compile(index, requirements_in, pylock, root / "home", "--format", "pylock.toml")
            uv_lock = _lock_project(index, root / "project", root / "home")
        finally:
            online.stop()
        (root / "target").mkdir()
        config = write_config(root / "target", server.url, sources, token=TOKEN)
        first = prefetch(config, "-r", str(requirements), "--jobs", "2")
        second = prefetch(config, "-r", str(requirements))
        from_pylock = prefetch(config, "--lock", str(pylock))
        from_uv_lock = prefetch(config, "--lock", str(uv_lock))
    yield Prefetched(
        root,
        config,
        requirements,
        pylock,
        uv_lock,
        first,
        second,
        from_pylock,
        from_uv_lock,
        len(double.requests),
        double,
    )


def _install_offline(config: Path, requirements: Path, where: Path) -> None:
    """pip install and uv pip sync of `requirements` through an offline proxy on `config`."""
    proxy = start_proxy(config, "--offline")
    try:
        index = f"{proxy.url}/simple/"
        env = isolated_env(where / "home")
        pip_command = [sys.executable, "-m", "pip", "install", "--index-url", index]
        pip = run([*pip_command, "--target", str(where / "pip"), "-r", str(requirements)], env)
        assert pip.returncode == 0, pip.stderr
        uv_command = [uv_binary(), "pip", "sync", "--python", sys.executable, "--index-url", index]
        uv = run([*uv_command, "--target", str(where / "uv"), str(requirements)], env)
        assert uv.returncode == 0, uv.stderr
        for target in ("pip", "uv"):
            installed = {p.name for p in (where / target).iterdir()}
            assert installed >= INSTALLED, (target, installed)
        assert "--hash=sha256:" in requirements.read_text()  # pip checked every hash
        page = httpx2.get(f"{proxy.url}/simple/tool-x/")
        assert page.status_code == 200
        assert "tool_x-1.1-py3-none-any.whl" in page.text
        public = httpx2.get(f"{proxy.url}/simple/pub-lib/", headers=JSON).json()
        assert public["_source"] == "public"  # the public index's page, kept by prefetch
        root = httpx2.get(f"{proxy.url}/simple/")  # the project lists were cached too
        assert root.status_code == 200
        assert {"app-main", "tool-x", "unrelated"} <= set(re.findall(r">([a-z-]+)</a>", root.text))
    finally:
        proxy.stop()


def test_prefetch_reports_every_file_and_completes(prefetched: Prefetched) -> None:
    first = prefetched.first
    assert first.returncode == 0, first.stdout + first.stderr
    # app-main wheel, app-dep wheel and sdist, tool-x 1.1 wheel, pub-lib wheel from the public
    # index: exactly the listed hashes
    assert "fetched: 5 (" in first.stdout
    assert "already cached: 0" in first.stdout
    assert "fetched app_dep-2.0.tar.gz" in first.stdout  # plain lines: not a terminal
    assert "fetched pub_lib-1.0-py3-none-any.whl" in first.stdout
    assert "tool_x-1.0" not in first.stdout
    assert first.stdout.rstrip().endswith("offline-complete: yes")


def test_running_again_fetches_nothing(prefetched: Prefetched) -> None:
    second = prefetched.second
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already cached: 5" in second.stdout
    assert "fetched: 0 (0 bytes)" in second.stdout


def test_pylock_lists_the_same_files(prefetched: Prefetched) -> None:
    result = prefetched.from_pylock
    assert result.returncode == 0, result.stdout + result.stderr
    assert "offline-complete: yes" in result.stdout
    assert "fetched: 0" in result.stdout  # every file it names is one the requirements named
    assert "already cached: 5" in result.stdout


def test_uv_lock_lists_the_same_files(prefetched: Prefetched) -> None:
    result = prefetched.from_uv_lock
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already cached: 5" in result.stdout
    assert "offline-complete: yes" in result.stdout


def test_installs_offline_with_pip_and_uv_pip_sync(prefetched: Prefetched) -> None:
    _install_offline(prefetched.config, prefetched.requirements, prefetched.root / "offline")
    assert len(prefetched.double.requests) == prefetched.gitlab_calls_when_stopped


def test_bundle_carries_the_cache_to_an_empty_one(prefetched: Prefetched) -> None:
    root = prefetched.root / "bundle"
    root.mkdir()
    bundle = root / "cache.tar"
    exported = cache_cli(prefetched.config, "export", str(bundle))
    assert exported.returncode == 0, exported.stderr
    assert "exported 5 files" in exported.stdout
    config = write_config(root, NOWHERE, _sources(f"{NOWHERE}/simple/"), token=TOKEN)
    imported = cache_cli(config, "import", str(bundle))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "imported 5 files" in imported.stdout
    stats = cache_cli(config, "stats")
    assert "files: 5 entries" in stats.stdout
    assert "index pages: 9 project pages" in stats.stdout  # 4 names x 2 GitLab + pub-lib
    _install_offline(config, prefetched.requirements, root / "offline")


def _tamper(bundle: Path, out: Path, filename: str) -> None:
    """Copy a bundle, changing one byte of one file member (same size: only a rehash sees it)."""
    with tarfile.open(bundle) as source, tarfile.open(out, "w") as copy:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("/" + filename):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            copy.addfile(member, io.BytesIO(data) if data is not None else None)


def test_a_tampered_bundle_names_the_bad_file_and_keeps_the_rest(prefetched: Prefetched) -> None:
    root = prefetched.root / "tampered"
    root.mkdir()
    bundle, tampered = root / "good.tar", root / "bad.tar"
    assert cache_cli(prefetched.config, "export", str(bundle)).returncode == 0
    victim = "app_dep-2.0-py3-none-any.whl"
    _tamper(bundle, tampered, victim)
    config = write_config(root, NOWHERE, _sources(f"{NOWHERE}/simple/"), token=TOKEN)
    result = cache_cli(config, "import", str(tampered))
    assert result.returncode == 1
    assert f"bad: {victim}: sha256 mismatch" in result.stdout
    assert "imported 4 files" in result.stdout
    proxy = start_proxy(config, "--offline")
    try:
        page = httpx2.get(f"{proxy.url}/simple/app-dep/", headers=JSON).json()
        by_name = {f["filename"]: f for f in page["files"]}
        # offline and not kept: a definite 404 (no retry helps while offline)
        for filename, status in [(victim, 404), ("app_dep-2.0.tar.gz", 200)]:
            url = f"{proxy.url}/simple/app-dep/{by_name[filename]['url']}"
            response = httpx2.get(url)
            assert response.status_code == status, filename
            if status == 200:
                assert (
                    hashlib.sha256(response.content).hexdigest()
                    == (by_name[filename]["hashes"]["sha256"])
                )
    finally:
        proxy.stop()
