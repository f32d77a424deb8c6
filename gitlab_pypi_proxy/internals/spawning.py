"""Starting `serve`'s processes as multiprocessing does, minus the process it needs not run.

multiprocessing's `spawn` (uvicorn's workers) starts a resource tracker, an interpreter of its
own, to unlink the semaphores and shared memory processes left behind. No process of `serve`
creates either (tests/unit/test_worker_imports.py), so the tracker's pipe is /dev/null: `spawn`
finds a tracker "running" and starts none. A Python without those names starts its tracker as
usual: the same proxy, a little larger.

Internal names used, tested on CPython 3.11 (read in 3.12 to 3.14, where they are the same):
`multiprocessing.resource_tracker._resource_tracker` and its `_fd`;
`subprocess._args_from_interpreter_flags`, the flags the supervisor's exec passes as
multiprocessing does. tests/unit/test_spawning.py fails when spawning starts a tracker again."""

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
