"""gitlab_pypi_proxy.internals.spawning, on this Python: `spawn` starts no resource tracker once
it is turned off (and does without that), and the interpreter's flags reach the supervisor."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SPAWN = """
import json, multiprocessing, sys
import psutil
from gitlab_pypi_proxy.internals.spawning import without_resource_tracker

if __name__ == "__main__":
    if sys.argv[1] == "off":
        without_resource_tracker()
    worker = multiprocessing.get_context("spawn").Process(target=print)
    worker.start()
    worker.join(60)
    print(json.dumps([" ".join(p.cmdline()) for p in psutil.Process().children()]))
"""


@pytest.mark.parametrize("tracker", ["on", "off"])
def test_spawning_starts_a_resource_tracker_only_when_not_turned_off(
    tracker: str, tmp_path: Path
) -> None:
    script = tmp_path / "spawn.py"
    script.write_text(SPAWN)
    done = subprocess.run(
        [sys.executable, str(script), tracker],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    children = json.loads(done.stdout.splitlines()[-1])
    trackers = [c for c in children if "resource_tracker" in c]
    assert len(trackers) == (1 if tracker == "on" else 0), children


def test_the_interpreters_flags_come_through() -> None:
    probe = (
        "import json; from gitlab_pypi_proxy.internals.spawning import interpreter_flags; "
        "print(json.dumps(interpreter_flags()))"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-W", "error::ResourceWarning", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    flags = json.loads(done.stdout)
    assert flags[flags.index("-X") + 1] == "importtime"
    assert "-Werror::ResourceWarning" in flags
