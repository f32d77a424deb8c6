"""The descriptor watch: running out is noticed by the probe or by asyncio's report of a failed
accept, logged once when it starts and once when it ends, and shown while it lasts; other loop
errors still reach the loop's handler. End to end, under a real limit: test_slow_clients.py."""

import asyncio
import errno
import logging
import os

import pytest
from prometheus_client import REGISTRY

from gitlab_pypi_proxy.descriptors import DescriptorWatch


def no_descriptor(fd: int) -> int:
    raise OSError(errno.EMFILE, "Too many open files")


def _exhausted_gauge() -> float | None:
    return REGISTRY.get_sample_value("gitlab_pypi_proxy_descriptors_exhausted")


async def test_running_out_is_logged_once_shown_while_it_lasts_and_its_end_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.descriptors")
    watch = DescriptorWatch()
    watch.start(asyncio.get_running_loop())
    try:
        watch.probe()
        assert watch.exhaustion() is None and watch.as_json()["exhausted"] is False

        with monkeypatch.context() as patched:
            patched.setattr(os, "dup", no_descriptor)
            for _ in range(3):
                watch.probe()
            reason = watch.exhaustion()
            assert reason is not None and reason.startswith("out of file descriptors: all ")
            assert watch.as_json()["exhausted"] is True and _exhausted_gauge() == 1
        watch.probe()
        assert watch.exhaustion() is None and _exhausted_gauge() == 0
    finally:
        watch.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.descriptors"]
    assert len(lines) == 2
    assert lines[0].startswith("out of file descriptors: all ")
    assert lines[0].endswith(
        "(RLIMIT_NOFILE) are in use; new connections are dropped until some close"
    )
    assert lines[1].startswith("file descriptors available again, after ")


async def test_a_full_system_file_table_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    watch = DescriptorWatch()
    watch.start(asyncio.get_running_loop())
    try:

        def table_full(fd: int) -> int:
            raise OSError(errno.ENFILE, "Too many open files in system")

        monkeypatch.setattr(os, "dup", table_full)
        watch.probe()
        assert watch.exhaustion() == (
            "out of file descriptors: the system's table of open files is full (fs.file-max); "
            "new connections are dropped"
        )
    finally:
        monkeypatch.undo()
        watch.stop()


async def test_asyncios_failed_accept_is_folded_in_and_other_errors_pass_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda loop, context: seen.append(context["message"]))
    watch = DescriptorWatch()
    watch.start(loop)
    try:
        monkeypatch.setattr(os, "dup", no_descriptor)
        loop.call_exception_handler(
            {"message": "socket.accept() out of system resource", "exception": OSError(24, "")}
        )
        assert watch.exhaustion() is not None  # noticed at once, without a traceback
        loop.call_exception_handler({"message": "something else"})
        assert seen == ["something else"]
    finally:
        monkeypatch.undo()
        watch.stop()
    assert loop.get_exception_handler() is not None  # the one before the watch, back in place
    loop.set_exception_handler(None)
