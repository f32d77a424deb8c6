"""gitlab_pypi_proxy.internals.spawning, on this Python: the interpreter's flags reach the
supervisor and its workers."""

import json
import subprocess
import sys


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
