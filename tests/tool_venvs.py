"""The real poetry and pdm for the end-to-end tests, each in a virtual environment of its own.

They must not touch the project's environment (their dependencies would change the proxy's), and
a run must not meet a release it was not written for (pdm stopped working with its HTTP cache
library's next major version): each is installed from tests/tool_pins/<tool>-<version>.txt, its
whole dependency set pinned, into ~/.cache/gitlab-pypi-proxy-tests/<tool>-<version>/, once per
machine, and reused while the pins are the same. `python -m tests.tool_venvs` builds them ahead
(.ci/run does, so that the suite's time is the tests' own).
"""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

TOOLS = {"poetry": "2.5.1", "pdm": "2.29.4"}
PINS = Path(__file__).parent / "tool_pins"
_DONE = "pins.txt"  # written last: a venv without it was cut short and is built again


def _home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gitlab-pypi-proxy-tests"


def tool_python(tool: str) -> Path:
    """The Python of `tool`'s environment (run the tool as `python -m <tool>`: a venv's scripts
    are bound to where it was built)."""
    name = f"{tool}-{TOOLS[tool]}"
    pins = (PINS / f"{name}.txt").read_text()
    target = _home() / name
    python = target / "bin" / "python"
    done = target / _DONE
    if done.exists() and done.read_text() == pins:
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if done.exists() and done.read_text() == pins:
            return python
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, timeout=300)
        install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        result = subprocess.run(
            [*install, "-r", str(PINS / f"{name}.txt")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"installing {name} failed:\n{result.stdout}{result.stderr}")
        done.write_text(pins)
    return python


if __name__ == "__main__":
    for tool in TOOLS:
        print(f"{tool}: {tool_python(tool)}")
