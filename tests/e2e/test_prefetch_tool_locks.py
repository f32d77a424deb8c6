"""poetry, pdm and pipenv users end to end: the real poetry and pdm (tests/tool_venvs.py) lock a
project through the proxy against the GitLab double and publish through its upload URLs;
`prefetch --lock` fills an empty cache from their poetry.lock and pdm.lock and a Pipfile.lock in
the format pipenv writes (one run: the three want disjoint files, so each file fetched is one
input's); with GitLab gone, `poetry install` and `pdm sync` install from an offline proxy. The
commands after the locking take their configuration from GITLAB_PYPI_PROXY_CONFIG alone, as in
the container image.

The offline proxy listens on the online one's port: poetry.lock records the index URL, and
poetry refuses a lock file whose sources differ from the project's.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitlab_pypi_proxy.cli import CONFIG_ENV
from gitlab_pypi_proxy.demo.dists import make_sdist, make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.clients import isolated_env
from tests.proxy_process import start_proxy, write_config
from tests.servers import serve
from tests.tool_venvs import tool_python
from tests.worlds import UPLOADER_CONFIG, UPLOADER_PASSWORD, app_taking_uploads

TOKEN = "glpat-tool-locks"
SOURCES = [{"name": "platform", "gitlab_project": 11}]
Run = subprocess.CompletedProcess[str]


@dataclass
class World:
    double: GitLabDouble
    poetry_project: Path
    pdm_project: Path
    prefetched: Run
    poetry_publish: Run
    pdm_publish: Run
    published: dict[str, bytes]  # file name → bytes, of what poetry and pdm published
    poetry_install: Run
    pdm_sync: Run
    gitlab_calls_when_stopped: int
    gitlab_calls_after_install: int


def _double() -> GitLabDouble:
    """app-main 1.0 → app-dep 2.0 (poetry's project), tool-x 1.1 wheel and sdist (pdm's), and
    pipenv-dep 1.0 (the Pipfile.lock's); project 11 takes uploads from UPLOADER_CONFIG's user."""
    double = app_taking_uploads(TOKEN)
    for name, data in (make_wheel("tool-x", "1.1"), make_sdist("tool-x", "1.1")):
        double.add_package_file(11, "tool-x", "1.1", name, data)
    double.add_package_file(11, "pipenv-dep", "1.0", *make_wheel("pipenv-dep", "1.0"))
    return double


def _tool_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in isolated_env(home).items() if not k.startswith(("POETRY_", "PDM_"))}
    return env | {
        "POETRY_CACHE_DIR": str(home / "poetry-cache"),
        "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        "POETRY_NO_INTERACTION": "1",
        "PDM_CACHE_DIR": str(home / "pdm-cache"),
        "PDM_CHECK_UPDATE": "false",
    }


def _tool(tool: str, project: Path, *args: str, env: dict[str, str]) -> "subprocess.Popen[str]":
    """`tool` started in `project`; poetry's and pdm's steps run side by side (`_together`)."""
    command = [str(tool_python(tool)), "-m", tool, *args]
    return subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _together(*started: "subprocess.Popen[str]") -> list[Run]:
    """Each started tool's outcome, waited for with a deadline; none outlives this."""
    try:
        results = []
        for process in started:
            stdout, stderr = process.communicate(timeout=180)
            results.append(Run(process.args, process.returncode, stdout, stderr))
        return results
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def _project(directory: Path, name: str, dependency: str, tool_table: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        f'dependencies = ["{dependency}"]\n\n{tool_table}'
    )
    return directory


def _poetry_project(directory: Path, index: str) -> Path:
    return _project(
        directory,
        "poetry-build",
        "app-main",
        '[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\nname = "proxy"\n'
        f'url = "{index}"\npriority = "primary"\n',
    )


def _pdm_project(directory: Path, index: str) -> Path:
    return _project(
        directory,
        "pdm-build",
        "tool-x",
        '[tool.pdm]\ndistribution = false\n\n[[tool.pdm.source]]\nname = "pypi"\n'
        f'url = "{index}"\n',
    )


def _dists(directory: Path, name: str, published: dict[str, bytes]) -> Path:
    """A project directory holding dist/ with a wheel and an sdist of `name` 1.0."""
    (directory / "dist").mkdir(parents=True)
    (directory / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1.0"\n')
    for filename, data in (make_wheel(name, "1.0"), make_sdist(name, "1.0")):
        (directory / "dist" / filename).write_bytes(data)
        published[filename] = data
    return directory


def _pipfile_lock(path: Path, double: GitLabDouble) -> Path:
    """A Pipfile.lock as `pipenv lock` writes it (pipfile-spec 6): pins by name, each with the
    sha256 of its files and no file name; plus a git pin, which no index serves."""
    (file,) = [f for f in double.files if f.name == "pipenv-dep"]
    path.write_text(
        '{\n    "_meta": {\n        "hash": {"sha256": "' + "0" * 64 + '"},\n'
        '        "pipfile-spec": 6,\n        "requires": {"python_version": "3.11"},\n'
        '        "sources": [{"name": "proxy", "url": "http://proxy/simple", "verify_ssl": false}]'
        '\n    },\n    "default": {\n        "pipenv-dep": {\n'
        f'            "hashes": ["sha256:{file.sha256}"],\n'
        '            "index": "proxy",\n            "version": "==1.0"\n        },\n'
        '        "from-git": {"git": "https://git.example/x.git", "ref": "0123"}\n'
        '    },\n    "develop": {}\n}\n'
    )
    return path


def _prefetch(config: Path, *args: str) -> Run:
    """`prefetch` with its configuration from the environment only, as in the image."""
    env = {**os.environ, CONFIG_ENV: str(config)}
    command = [sys.executable, "-m", "gitlab_pypi_proxy", "prefetch", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _site(project: Path) -> Path:
    return next((project / ".venv" / "lib").glob("python3*/site-packages"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("tool-locks")
    double = _double()
    published: dict[str, bytes] = {}
    env = _tool_env(root / "home")
    with serve(double.app) as gitlab:
        (root / "online").mkdir()
        online_config = write_config(
            root / "online", gitlab.url, SOURCES, token=TOKEN, extra=UPLOADER_CONFIG
        )
        online = start_proxy(online_config)
        try:
            index = f"{online.url}/simple/"
            poetry_project = _poetry_project(root / "poetry", index)
            pdm_project = _pdm_project(root / "pdm", index)
            locks = _together(
                _tool("poetry", poetry_project, "lock", env=env),
                _tool("pdm", pdm_project, "lock", env=env),
            )
            for locked in locks:
                assert locked.returncode == 0, locked.stdout + locked.stderr
            poetry_publish, pdm_publish = _together(
                _tool(
                    "poetry",
                    _dists(root / "poetry-pub", "poetry-pub", published),
                    *("publish", "-r", "proxy", "-u", "ci", "-p", UPLOADER_PASSWORD),
                    env=env | {"POETRY_REPOSITORIES_PROXY_URL": f"{online.url}/legacy/"},
                ),
                _tool(
                    "pdm",
                    _dists(root / "pdm-pub", "pdm-pub", published),
                    *("publish", "--no-build", "-r", f"{online.url}/", "-u", "ci"),
                    *("-P", UPLOADER_PASSWORD),
                    env=env | {"PDM_PYTHON": sys.executable},  # publishing needs no venv
                ),
            )
        finally:
            online.stop()
        (root / "target").mkdir()
        config = write_config(root / "target", gitlab.url, SOURCES, token=TOKEN)
        prefetched = _prefetch(
            config,
            *("--lock", str(poetry_project / "poetry.lock")),
            *("--lock", str(pdm_project / "pdm.lock")),
            *("--lock", str(_pipfile_lock(root / "Pipfile.lock", double))),
        )
        calls_when_stopped = len(double.requests)
    # GitLab is gone: the offline proxy answers from the cache prefetch filled
    port = int(online.url.rsplit(":", 1)[1])
    offline = start_proxy(config, "--offline", config_from_env=True, port=port)
    try:
        poetry_install, pdm_sync = _together(
            _tool("poetry", poetry_project, "install", env=env),
            _tool("pdm", pdm_project, "sync", env=env),
        )
    finally:
        offline.stop()
    yield World(
        double,
        poetry_project,
        pdm_project,
        prefetched,
        poetry_publish,
        pdm_publish,
        published,
        poetry_install,
        pdm_sync,
        calls_when_stopped,
        len(double.requests),
    )


def _fetched(result: Run) -> set[str]:
    return {line.split()[1] for line in result.stdout.splitlines() if line.startswith("fetched ")}


def test_lock_files_made_by_poetry_and_pdm_and_a_pipfile_lock_are_prefetched(
    world: World,
) -> None:
    result = world.prefetched
    assert result.returncode == 0, result.stdout + result.stderr
    poetry_lock = (world.poetry_project / "poetry.lock").read_text()
    assert 'type = "legacy"' in poetry_lock  # poetry's own format, told by its name
    assert _fetched(result) == {
        "app_main-1.0-py3-none-any.whl",  # poetry.lock
        "app_dep-2.0-py3-none-any.whl",
        "tool_x-1.1-py3-none-any.whl",  # pdm.lock
        "tool_x-1.1.tar.gz",
        "pipenv_dep-1.0-py3-none-any.whl",  # Pipfile.lock
    }
    assert result.stdout.splitlines()[-3:] == [
        "skipped, not from an index: 1",
        "  from-git (Pipfile.lock: default from-git): git",
        "offline-complete: yes",
    ]


def test_poetry_and_pdm_install_offline_from_the_prefetched_cache(world: World) -> None:
    for result in (world.poetry_install, world.pdm_sync):
        assert result.returncode == 0, result.stdout + result.stderr
    poetry_site = {p.name for p in _site(world.poetry_project).iterdir()}
    assert {"app_main-1.0.dist-info", "app_dep-2.0.dist-info"} <= poetry_site
    assert "tool_x-1.1.dist-info" in {p.name for p in _site(world.pdm_project).iterdir()}
    assert world.gitlab_calls_after_install == world.gitlab_calls_when_stopped


def test_poetry_publishes_to_legacy_and_pdm_to_the_index_url_without_simple(
    world: World,
) -> None:
    for result in (world.poetry_publish, world.pdm_publish):
        assert result.returncode == 0, result.stdout + result.stderr
    stored = {f.filename: f.content for f in world.double.files if f.project_id == 11}
    assert len(world.published) == 4
    assert {name: stored.get(name) for name in world.published} == world.published
