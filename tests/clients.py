"""The real pip, uv and twine in subprocesses, isolated from this machine's own configuration."""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def isolated_env(home: Path) -> dict[str, str]:
    """No user or site config, no extra indexes or find-links, caches under `home`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_", "TWINE_", "PYTHONPATH"))
        # an activated venv (the test command activates .venv) would be the clients' target
        and k != "VIRTUAL_ENV"
    }
    home.mkdir(parents=True, exist_ok=True)
    env |= {
        "HOME": str(home),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_CACHE_DIR": str(home / "pip-cache"),
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_NO_CONFIG": "1",
        "UV_CACHE_DIR": str(home / "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "XDG_CONFIG_HOME": str(home / "config"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "NO_COLOR": "1",
    }
    return env


def printed(result: subprocess.CompletedProcess) -> str:
    """What a client printed (stdout, then stderr) as one line: uv wraps its messages to a width
    that depends on where it runs."""
    return " ".join((result.stdout + result.stderr).split())


def uv_binary() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def run(
    command: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def pip_install(
    index_url: str, target: Path, *requirements: str, home: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "install", "--index-url", index_url, "--target"]
    command += [str(target), *extra, *requirements]
    return run(command, isolated_env(home))


def uv_install(
    index_url: str, target: Path, *requirements: str, home: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    command = [uv_binary(), "pip", "install", "--python", sys.executable, "--index-url"]
    command += [index_url, "--target", str(target), *extra, *requirements]
    return run(command, isolated_env(home))


def clear_client_caches(home: Path) -> None:
    for name in ("pip-cache", "uv-cache"):
        shutil.rmtree(home / name, ignore_errors=True)


def twine_upload(
    repository_url: str,
    files: list[Path],
    *,
    user: str,
    password: str,
    home: Path,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "twine", "upload", "--repository-url", repository_url]
    command += ["--username", user, "--password", password, "--non-interactive"]
    command += ["--disable-progress-bar", *extra, *map(str, files)]
    return run(command, isolated_env(home))


def uv_publish(
    publish_url: str,
    files: list[Path],
    *,
    user: str,
    password: str,
    home: Path,
    check_url: str | None = None,
) -> subprocess.CompletedProcess:
    command = [uv_binary(), "publish", "--publish-url", publish_url, "--trusted-publishing"]
    command += ["never", "--username", user, "--password", password]
    if check_url:
        command += ["--check-url", check_url]
    return run([*command, *map(str, files)], isolated_env(home))
