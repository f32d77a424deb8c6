"""The real client tools the end-to-end tests run, each installed in a directory of its own:
poetry and pdm (each in a virtual environment) and Renovate (with npm, on the machine's Node.js).

They must not touch the project's environment (their dependencies would change the proxy's), and
a run must not meet a release it was not written for (pdm stopped working with its HTTP cache
library's next major version): each is installed from its pins, its whole dependency set pinned
(tests/tool_pins/<tool>-<version>.txt for pip; renovate-<version>/, a package.json and its
package-lock.json, for `npm ci`), into ~/.cache/gitlab-pypi-proxy-tests/<tool>-<version>/, once
per machine, and reused while the pins are the same. `python -m tests.tool_venvs` installs them
ahead (.ci/run does, so that the suite's time is the tests' own); a test installs what is missing.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

TOOLS = {"poetry": "2.5.1", "pdm": "2.29.4"}
RENOVATE = "37.440.7"
PINS = Path(__file__).parent / "tool_pins"
_DONE = "pins.txt"  # written last: an install without it was cut short and is done again


def _home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gitlab-pypi-proxy-tests"


def _installed(name: str, pins: str, install: Callable[[Path], None]) -> Path:
    """The directory of `name` under the cache: `install(directory)` made it from `pins`
    (their text), now or on an earlier run."""
    target = _home() / name
    done = target / _DONE
    if done.exists() and done.read_text() == pins:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install it once
        if done.exists() and done.read_text() == pins:
            return target
        shutil.rmtree(target, ignore_errors=True)
        install(target)
        done.write_text(pins)
    return target


def _run(command: list[str], name: str, timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"installing {name} failed:\n{result.stdout}{result.stderr}")


def tool_python(tool: str) -> Path:
    """The Python of `tool`'s environment (run the tool as `python -m <tool>`: a venv's scripts
    are bound to where it was built)."""
    name = f"{tool}-{TOOLS[tool]}"

    def install(target: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, timeout=300)
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        _run([*pip, "--disable-pip-version-check", "-r", str(PINS / f"{name}.txt")], name, 600)

    return _installed(name, (PINS / f"{name}.txt").read_text(), install) / "bin" / "python"


def renovate_command() -> list[str]:
    """How to run the pinned Renovate (its npm install of some 800 packages takes minutes)."""
    name = f"renovate-{RENOVATE}"

    def install(target: Path) -> None:
        target.mkdir()
        for pinned in ("package.json", "package-lock.json"):
            shutil.copyfile(PINS / name / pinned, target / pinned)
        npm = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        _run([*npm, "--prefix", str(target)], name, 1200)

    target = _installed(name, (PINS / name / "package-lock.json").read_text(), install)
    return ["node", str(target / "node_modules" / "renovate" / "dist" / "renovate.js")]


if __name__ == "__main__":
    for tool in TOOLS:
        print(f"{tool}: {tool_python(tool)}")
    print(f"renovate: {' '.join(renovate_command())}")
