"""Bursts of cold traffic must not wedge the proxy.

The proxy with two workers in front of a slow GitLab double takes several rounds of hundreds of
concurrent requests for distinct uncached names from clients that give up early (short timeouts,
or a connection dropped right after the request), so that requests queue in its upstream pool.
Afterwards it must still get requests out: a cold name answers within the configured timeout,
a passthrough login and an upload reach GitLab, `/readyz` says ready, and once GitLab has closed
its side of the idle connections the proxy holds at most its pool's keep-alive size of sockets
to GitLab, none of them half-closed (CLOSE-WAIT).

With httpx 0.28.1/httpcore 1.0.9 (before commit fe5b7be) this fails: the workers end up holding
their 200 slots' worth of sockets to GitLab, most in CLOSE-WAIT, and nothing gets out any more.
"""

import asyncio
import base64
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import psutil
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.e2e.test_production import _metrics
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import Server, serve
from tests.waiting import wait_until
from tests.worlds import app_with_dependency

TOKEN = "glpat-bursts-reader"
JOB_TOKEN = "glcbt-bursts-job"
LATER_JOB_TOKEN = "glcbt-bursts-later-job"
DEPLOY_TOKEN = "gldt-bursts-deploy"
TIMEOUT = 10  # [gitlab] timeout, as tests.proxy_process.write_config sets it
KEEPALIVE = 50  # gitlab_pypi_proxy.sources.upstream._KEEP_ALIVE, per worker
ROUNDS = 3
ROUND_SECONDS = 4.0
CONCURRENT = 200  # clients at a time; each cold name costs two upstream requests
PER_CLIENT = 40  # cold names per client and round, at most
LATENCY = 0.2  # seconds the double takes for every answer, so that requests queue
_P = "gitlab_pypi_proxy_"
# The burst's clients pass GitLab credentials through (checked with GitLab once per worker and
# remembered); proxy users would each pay a password hash until their first check is remembered.
AUTH = "[auth]\nanonymous_read = false\npassthrough = true\n"
BURST = ("gitlab-ci-token", JOB_TOKEN)
BASIC = "Basic " + base64.b64encode(":".join(BURST).encode()).decode()


@dataclass
class Setup:
    proxy: ProxyProcess
    double: GitLabDouble
    server: Server


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    double = app_with_dependency(TOKEN)
    double.add_job_token(JOB_TOKEN, read={11})
    double.add_job_token(LATER_JOB_TOKEN, read={11})
    double.add_token(DEPLOY_TOKEN, write={11})
    double.latency = LATENCY
    with serve(double.app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        # The pool is under test here, not GitLab's budget: a burst of thousands of cold names
        # would otherwise spend it and get 503s naming it (tests/unit/test_budget.py).
        gitlab = {"max_requests_per_minute": 1_000_000}
        config = write_config(tmp_path, server.url, sources, token=TOKEN, extra=AUTH, gitlab=gitlab)
        proxy = start_proxy(config, "--workers", "2")
        try:
            yield Setup(proxy, double, server)
        finally:
            proxy.stop()


async def _impatient(port: int, path: str, patience: float | None) -> None:
    """One client: send the request, then hang up after `patience` seconds (None: at once)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        head = f"GET {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: {BASIC}\r\n"
        writer.write(f"{head}Connection: close\r\n\r\n".encode())
        await writer.drain()
        if patience is not None:
            await asyncio.wait_for(reader.read(), patience)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


async def _round(port: int, round_: int) -> None:
    """CONCURRENT clients, each asking for new cold names one after another, for a few seconds."""
    deadline = time.monotonic() + ROUND_SECONDS

    async def client(k: int) -> None:
        for n in range(PER_CLIENT):
            if time.monotonic() > deadline:
                return
            patience = None if n % 4 == 0 else random.uniform(0.05, 1.5)
            await _impatient(port, f"/simple/cold-{round_}-{k}-{n}/", patience)

    await asyncio.gather(*(client(k) for k in range(CONCURRENT)))


def _sockets_to(proxy: ProxyProcess, port: int) -> dict[int, Counter[str]]:
    """How many TCP sockets to `port` each proxy process (server and workers) holds, by state."""
    main = psutil.Process(proxy.process.pid)
    found: dict[int, Counter[str]] = {}
    for process in [main, *main.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        found[process.pid] = Counter(
            c.status for c in connections if c.raddr and c.raddr.port == port
        )
    return found


def _double_connections(server: Server) -> int:
    """Connections the GitLab double (in this process) still holds open."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr.port == server.port and c.status != psutil.CONN_LISTEN
    )


def _total(metrics: dict, name: str) -> float:
    """A metric summed over its labels (and, as the proxy reports it, over its workers)."""
    return sum(value for (sample, _), value in metrics.items() if sample == name)


def test_bursts_of_cold_names_from_impatient_clients_leave_the_proxy_working(setup: Setup) -> None:
    proxy, double = setup.proxy, setup.double
    port = int(proxy.url.rsplit(":", 1)[1])
    for round_ in range(ROUNDS):
        asyncio.run(_round(port, round_))

    # The clients left; the page fetches they started are shared work and go on. Until done:
    def settled() -> bool:
        try:
            counted = _metrics(proxy.url)
        except httpx2.TimeoutException:
            return False
        busy = _total(counted, _P + "upstream_requests_waiting")
        return busy + _total(counted, _P + "upstream_requests_active") == 0

    wait_until(settled, "the upstream requests the burst left to end", seconds=30)
    assert len(double.requests) > ROUNDS * CONCURRENT  # the bursts reached GitLab

    page = "/api/v4/projects/11/packages/pypi/simple/app-main"
    try:
        cold = httpx2.get(f"{proxy.url}/simple/app-main/", auth=BURST, timeout=TIMEOUT)
    except httpx2.TimeoutException:
        ready = httpx2.get(f"{proxy.url}/readyz").text
        pytest.fail(f"a cold name got no answer within the configured timeout; /readyz: {ready}")
    assert cold.status_code == 200, cold.text
    assert "app_main-1.0-py3-none-any.whl" in cold.text and double.count("GET", page) == 1

    later = ("gitlab-ci-token", LATER_JOB_TOKEN)  # not seen yet: GitLab is asked about them
    login = httpx2.get(f"{proxy.url}/simple/app-dep/", auth=later, timeout=TIMEOUT)
    assert login.status_code == 200, login.text
    probe = "/api/v4/projects/11/packages/pypi/simple"
    asked = [r for r in double.requests if r.path == probe]
    assert LATER_JOB_TOKEN in base64.b64decode(asked[-1].headers["authorization"][6:]).decode()
    filename, data = make_wheel("burst-pkg", "1.0")
    uploaded = httpx2.post(
        f"{proxy.url}/upload/platform/",
        auth=("deployer", DEPLOY_TOKEN),
        data={"name": "burst-pkg", "version": "1.0"},
        files={"content": (filename, data)},
        timeout=TIMEOUT,
    )
    assert uploaded.status_code == 201, uploaded.text
    assert double.uploads()[-1].fields["name"] == "burst-pkg"

    ready = httpx2.get(f"{proxy.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["upstream_pool"] == {"stalled": False, "reason": None}
    counted = _metrics(proxy.url)
    assert _total(counted, _P + "upstream_pool_replacements_total") == 0
    errors = [
        (labels, value)
        for (name, labels), value in counted.items()
        if name == _P + "http_requests_total" and dict(labels)["status"][0] == "5" and value
    ]
    assert errors == []

    # GitLab (uvicorn) closes idle keep-alive connections after 5 s; the proxy must close its
    # ends too, rather than keep them half-closed until its next upstream request.
    wait_until(lambda: _double_connections(setup.server) == 0, "the double to close its side")

    def closed() -> bool:
        found = _sockets_to(proxy, setup.server.port).values()
        return all(s.total() <= KEEPALIVE and not s[psutil.CONN_CLOSE_WAIT] for s in found)

    try:
        wait_until(closed, "the proxy to close its half-closed sockets to GitLab", seconds=15)
    except AssertionError as exc:
        pytest.fail(f"{exc}: {_sockets_to(proxy, setup.server.port)}")


def test_a_client_hanging_up_mid_fetch_leaves_the_fetch_to_finish_for_the_others(
    tmp_path: Path,
) -> None:
    double = app_with_dependency(TOKEN)
    double.latency = 1.0  # the page fetch is still running when the first client hangs up
    page = "/api/v4/projects/11/packages/pypi/simple/app-main"
    with serve(double.app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        proxy = start_proxy(write_config(tmp_path, server.url, sources, token=TOKEN))
        try:
            port = int(proxy.url.rsplit(":", 1)[1])

            async def hang_up_once_asked() -> None:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /simple/app-main/ HTTP/1.1\r\nHost: proxy\r\n\r\n")
                await writer.drain()
                await asyncio.to_thread(wait_until, lambda: double.count("GET", page), "a fetch")
                writer.close()
                await writer.wait_closed()

            asyncio.run(hang_up_once_asked())
            second = httpx2.get(f"{proxy.url}/simple/app-main/", timeout=TIMEOUT)
            assert second.status_code == 200 and "app_main-1.0-py3-none-any.whl" in second.text
            assert double.count("GET", page) == 1  # joined the running fetch, or its result
        finally:
            proxy.stop()
