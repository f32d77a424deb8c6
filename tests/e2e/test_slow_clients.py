"""Slow and idle clients, and running out of file descriptors, end to end: connections that never
send a whole request head are cut after `[server] header_timeout` while everyone else is served;
the soft open-files limit is raised to the hard one at start; a process out of descriptors says so
once in the log and on `/readyz`, and again once it has them back.

Each proxy runs under a low RLIMIT_NOFILE set for it alone (the test's own is untouched), so a
few hundred loopback connections are enough to show what 1,100 do to a default `ulimit -n 1024`.
"""

import json
import re
import resource
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx2
import pytest

from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.static_index import JSON, StaticIndex
from tests.waiting import wait_until

SOFT = 128  # the soft limit the proxy is started with
HARD = min(512, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
SLOW = 200  # more connections than SOFT descriptors: without the raise, the proxy runs out
TIGHT = 96  # soft and hard: a proxy that idle connections can run out of descriptors
HEADER_TIMEOUT = 2


def _open_files_limits(soft: int, hard: int) -> Callable[[], None]:
    """For `preexec_fn`: the limits the proxy process starts with."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _proxy(
    directory: Path, upstream: str, limits: tuple[int, int], server: str = ""
) -> ProxyProcess:
    config = write_config(
        directory, upstream, [{"name": "public", "url": f"{upstream}/simple/"}], extra=server
    )
    return start_proxy(config, preexec_fn=_open_files_limits(*limits))


@pytest.fixture(scope="module")
def index() -> Iterator[tuple[StaticIndex, str]]:
    static = StaticIndex()
    static.add_wheel("slow-pkg", "1.0", None)
    with serve(static.app) as server:
        yield static, server.url


def _limits(pid: int) -> tuple[int, int]:
    """The soft and hard open-files limits of a process, as /proc shows them."""
    text = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", text, re.MULTILINE)
    assert match, text
    return int(match[1]), int(match[2])


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything until the proxy closes the connection (each read bounded by its timeout)."""
    have = b""
    while chunk := sock.recv(65536):
        have += chunk
    return have


def _connections(stack: ExitStack, url: str, count: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    return [
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
        for _ in range(count)
    ]


def test_slow_header_clients_are_cut_while_the_rest_is_served_past_the_soft_limit(
    index: tuple[StaticIndex, str], tmp_path: Path
) -> None:
    static, upstream = index
    proxy = _proxy(
        tmp_path, upstream, (SOFT, HARD), f"[server]\nheader_timeout = {HEADER_TIMEOUT}\n"
    )
    try:
        assert _limits(proxy.process.pid) == (HARD, HARD)
        assert f"open files limit (RLIMIT_NOFILE) raised from {SOFT} to {HARD}" in proxy.log()
        with ExitStack() as stack:
            slow = _connections(stack, proxy.url, SLOW)
            for sock in slow:  # a head begun, never finished
                sock.sendall(b"GET /simple/ HTTP/1.1\r\nhost: proxy\r\nx-drip: a")
            assert httpx2.get(f"{proxy.url}/healthz", timeout=20).status_code == 200
            page = httpx2.get(f"{proxy.url}/simple/slow-pkg/", headers={"accept": JSON}, timeout=20)
            assert page.status_code == 200
            link = page.json()["files"][0]["url"]
            wheel = httpx2.get(str(page.url.join(link)), timeout=20)
            assert wheel.content == static.projects["slow-pkg"][0].data
            answers = [_read_to_end(sock) for sock in slow]
        assert all(a.startswith(b"HTTP/1.1 408 Request Timeout\r\n") for a in answers)
        assert answers[0].endswith(f"no whole request head within {HEADER_TIMEOUT} s\n".encode())
        assert f"no whole request head within {HEADER_TIMEOUT} s ([server] header_timeout)" in (
            proxy.log()
        )
    finally:
        proxy.stop()


def _readyz_on(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """/readyz asked on a connection the proxy accepted earlier."""
    sock.sendall(b"GET /readyz HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n\r\n")
    head, _, body = _read_to_end(sock).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_running_out_of_descriptors_is_logged_once_and_shown_on_readyz(
    index: tuple[StaticIndex, str], tmp_path: Path
) -> None:
    _, upstream = index
    proxy = _proxy(tmp_path, upstream, (TIGHT, TIGHT))
    out = f"out of file descriptors: all {TIGHT} file descriptors this process may open"
    try:
        with ExitStack() as stack:
            (asking,) = _connections(stack, proxy.url, 1)  # accepted while there is room
            with ExitStack() as idle:
                _connections(idle, proxy.url, 2 * TIGHT)  # the last ones dropped at once
                wait_until(lambda: out in proxy.log(), "the proxy to log that it ran out")
                status, body = _readyz_on(asking)
            assert status == 503 and body["ready"] is False
            assert str(body["mode"]).startswith(f"not ready: {out} (RLIMIT_NOFILE) are in use")
            assert body["descriptors"] == {"exhausted": True, "limit": TIGHT}
        wait_until(
            lambda: "file descriptors available again" in proxy.log(), "the proxy to recover"
        )
        ready = httpx2.get(f"{proxy.url}/readyz", timeout=20)
        assert ready.status_code == 200
        assert ready.json()["descriptors"] == {"exhausted": False, "limit": TIGHT}
        assert proxy.log().count("out of file descriptors") == 1
    finally:
        proxy.stop()
