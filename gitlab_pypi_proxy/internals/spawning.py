"""The flags of this interpreter, for the ones `serve` starts (the supervisor's exec, each
worker) to run with, as multiprocessing passes them.

Internal name used, tested on CPython 3.11 (read in 3.12 to 3.14, where it is the same):
`subprocess._args_from_interpreter_flags`. tests/unit/test_spawning.py fails when it stops
giving them."""

import subprocess


def interpreter_flags() -> list[str]:
    """This interpreter's command-line flags (-X, -W, -O, ...), for a new interpreter to run
    with."""
    return subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined,no-any-return]
