"""Starting `serve`'s processes as multiprocessing does, minus the process it needs not run.

multiprocessing's `spawn` (uvicorn's workers) starts a resource tracker, a Python interpreter of
its own (~13 MiB, a tenth of a fresh proxy with two workers), which unlinks the named semaphores
and shared memory that processes registered and left behind. No process of `serve` creates
either (no multiprocessing locks, queues, pools or shared memory:
tests/unit/test_worker_imports.py), so the tracker's pipe is /dev/null: `spawn` finds a tracker
"running" and starts none, and the workers it starts inherit the same descriptor. A Python
without those names starts its tracker as usual: the same proxy, 13 MiB larger.

Internal names used, tested on CPython 3.11 (and read in 3.12 to 3.14, where they are the same):
`multiprocessing.resource_tracker._resource_tracker` and its `_fd`;
`subprocess._args_from_interpreter_flags`, the flags multiprocessing passes to its children, which
the supervisor's exec passes the same way. tests/unit/test_spawning.py fails when spawning starts
a tracker again or the flags stop coming through.
"""

import os
import subprocess


def interpreter_flags() -> list[str]:
    """This interpreter's command-line flags (-X, -W, -O, ...), for a new interpreter to run
    with."""
    return subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined,no-any-return]


def without_resource_tracker() -> None:
    """Processes `spawn`ed from now on (and theirs) start no resource tracker. Idempotent."""
    from multiprocessing import resource_tracker

    try:
        tracker = resource_tracker._resource_tracker
        if tracker._fd is None:
            tracker._fd = os.open(os.devnull, os.O_WRONLY)
    except AttributeError:
        pass
