"""Uploads on bad input and bad days, end to end: forms GitLab would store wrongly, a GitLab that
never answers, a SIGTERM while an upload is still arriving."""

import asyncio
import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.responses import Response

from gitlab_pypi_proxy.demo.dists import make_sdist, make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import Server, serve
from tests.waiting import wait_until

READER_TOKEN = "glpat-edges-reader"
DEPLOY_TOKEN = "gldt-edges-deploy"
PASSWORD = "edges-ci-password"
USERS = f"""
[upload]
default_source = "platform"

[[users]]
name = "ci"
password = "{PASSWORD}"
upload = ["platform"]
gitlab_token = "{DEPLOY_TOKEN}"
"""


@dataclass
class HangingUploads:
    """Wraps the GitLab double: while `on`, an upload is read whole and then never answered."""

    double: GitLabDouble
    on: bool = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        upload = scope["type"] == "http" and scope["method"] == "POST"
        if upload and self.on and scope["path"].endswith("/packages/pypi"):
            while (await receive()).get("more_body"):
                pass
            while self.on:  # the double's own behaviour: released when the test is done
                await asyncio.sleep(0.05)
            await Response(status_code=503)(scope, receive, send)  # the body was read already
            return
        await self.double.app(scope, receive, send)


@dataclass
class World:
    double: GitLabDouble
    hanging: HangingUploads
    server: Server


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token(READER_TOKEN, read={11})
    double.add_token(DEPLOY_TOKEN, write={11})
    hanging = HangingUploads(double)
    with serve(hanging) as server:
        try:
            yield World(double, hanging, server)
        finally:
            hanging.on = False


def _proxy(world: World, directory: Path, *, extra: str = "", **gitlab: object) -> ProxyProcess:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tmp").mkdir(exist_ok=True)  # where the proxy spools uploads
    sources = [{"name": "platform", "gitlab_project": 11}]
    config = write_config(
        directory, world.server.url, sources, token=READER_TOKEN, extra=USERS + extra, gitlab=gitlab
    )
    return start_proxy(config, env={"TMPDIR": str(directory / "tmp")})


@pytest.fixture(scope="module")
def proxy(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    process = _proxy(world, tmp_path_factory.mktemp("edges"), upload_timeout=2)
    yield process
    process.stop()


def _post(proxy: ProxyProcess, fields: dict[str, str], filename: str, data: bytes):
    return httpx2.post(
        f"{proxy.url}/upload/",
        auth=("ci", PASSWORD),
        data=fields,
        files={"content": (filename, data)},
        timeout=60,
    )


WHEEL = make_wheel("edge-pkg", "1.0")


@pytest.mark.parametrize(
    ("fields", "filename", "reason"),
    [
        (
            {"name": "other-pkg", "version": "1.0"},
            WHEEL[0],
            "edge_pkg-1.0-py3-none-any.whl is a file of edge-pkg, not of other-pkg",
        ),
        (
            {"name": "edge-pkg", "version": "2.0"},
            WHEEL[0],
            "edge_pkg-1.0-py3-none-any.whl is version 1.0, not 2.0",
        ),
        (
            {"name": "edge-pkg", "version": "1.0"},
            "notadist.exe",
            "notadist.exe is not a wheel (.whl) or sdist (.tar.gz, .zip) file name",
        ),
        (
            {"name": "edge-pkg", "version": "1.0", ":action": "remove_pkg"},
            WHEEL[0],
            "only ':action=file_upload' is supported, not 'remove_pkg'",
        ),
    ],
)
def test_a_form_gitlab_would_store_wrongly_is_refused(
    world: World, proxy: ProxyProcess, fields: dict[str, str], filename: str, reason: str
) -> None:
    uploads = len(world.double.uploads())
    response = _post(proxy, fields, filename, WHEEL[1])
    assert (response.status_code, response.text) == (400, reason + "\n")
    assert len(world.double.uploads()) == uploads


def test_a_form_whose_name_and_version_match_the_file_is_forwarded(
    world: World, proxy: ProxyProcess
) -> None:
    name, data = make_sdist("Edge.Pkg", "1.0")
    # another spelling of the same name and version, as twine sends them from the metadata
    fields = {"name": "Edge_Pkg", "version": "1.0.0", ":action": "file_upload"}
    response = _post(proxy, fields, name, data)
    assert response.status_code == 201, response.text
    assert world.double.uploads()[-1].fields["name"] == "Edge_Pkg"


def test_a_gitlab_that_never_answers_an_upload_gets_504_within_upload_timeout(
    world: World, proxy: ProxyProcess
) -> None:
    name, data = make_wheel("hang-pkg", "1.0")
    world.hanging.on = True
    try:
        response = _post(proxy, {"name": "hang-pkg", "version": "1.0"}, name, data)
    finally:
        world.hanging.on = False
    assert response.status_code == 504
    host = world.server.url.removeprefix("http://")
    assert response.text == (
        f"upload of {name} failed: upstream platform unavailable: {host} timed out\n"
    )
    assert "Traceback" not in proxy.log()


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_sigterm_while_an_upload_is_still_arriving_answers_503(
    world: World, tmp_path: Path
) -> None:
    proxy = _proxy(world, tmp_path, extra="[server]\ngraceful_shutdown = 1\n")
    try:
        name, _ = make_wheel("late-pkg", "1.0")
        boundary = "b0undary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nlate-pkg\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
            f'filename="{name}"\r\n\r\n'
        ).encode()
        port = int(proxy.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
            client.sendall(
                b"POST /upload/ HTTP/1.1\r\nHost: proxy\r\n"
                + f"Authorization: Basic {_basic('ci', PASSWORD)}\r\n".encode()
                + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
                + b"Content-Length: 50000000\r\n\r\n"
                + head
                + b"\1" * (2 * 2**20)  # past the 1 MiB starlette spools in memory
            )
            # the proxy is reading the upload once its spool file is on disk
            wait_until(lambda: proxy.open_files_under(tmp_path / "tmp"), "the upload spooled")
            proxy.process.terminate()  # SIGTERM; the client sends no more, as a slow one would
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert proxy.process.wait(timeout=30) in (0, -15)
    finally:
        proxy.stop()
    head_lines, _, body = answer.partition(b"\r\n\r\n")
    assert head_lines.startswith(b"HTTP/1.1 503 "), answer[:200]
    assert body == b"the proxy is shutting down before this upload finished: retry it\n"
    log = proxy.log()
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert log.count("upload to platform cut by the shutdown: answered 503") == 1
    assert not any(u.fields and u.fields.get("name") == "late-pkg" for u in world.double.uploads())


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def _answer(client: socket.socket, have: bytes) -> tuple[bytes, bytes]:
    """The head and body of the answer whose first bytes are `have`, read to its length."""
    while b"\r\n\r\n" not in have:
        chunk = client.recv(65536)
        assert chunk, f"the proxy closed the connection after {have!r}"
        have += chunk
    head, _, body = have.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = client.recv(65536)
        assert chunk, f"the proxy closed the connection after {have!r}"
        body += chunk
    return head, body


def test_form_fields_past_the_limit_are_refused_413_with_memory_bounded(
    world: World, proxy: ProxyProcess
) -> None:
    """Form fields are held in memory whole: the ones that are no file are refused past a few
    MiB in all, as they arrive, however many there are and however large the file."""
    fields, size = 24, 4 * 2**20 - 200  # each under the per-field cap; 96 MiB in all
    boundary = "f1elds"
    value = b"x" * size
    port = int(proxy.url.rsplit(":", 1)[1])
    pid = proxy.process.pid
    # a first form read loads what reading any form needs (~30 MiB), before the peak is measured
    small = httpx2.post(
        f"{proxy.url}/upload/", auth=("ci", PASSWORD), files={"comment": (None, b"warm")}
    )
    assert small.status_code == 400
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from here
    before = _peak_rss(pid)
    uploads = len(world.double.uploads())
    with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
        client.sendall(
            b"POST /upload/ HTTP/1.1\r\nHost: proxy\r\n"
            + f"Authorization: Basic {_basic('ci', PASSWORD)}\r\n".encode()
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        client.setblocking(False)
        answer = b""
        for number in range(fields):  # until the proxy answers, as a client would stop
            try:
                answer = client.recv(65536)
                break
            except BlockingIOError:
                pass
            part = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="classifiers_{number}"'
                    "\r\n\r\n"
                ).encode()
                + value
                + b"\r\n"
            )
            client.setblocking(True)
            client.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            client.setblocking(False)
        client.setblocking(True)
        if not answer:  # it read every field: the file, and the end of the form
            name, data = WHEEL
            end = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
                    f'filename="{name}"\r\n\r\n'
                ).encode()
                + data
                + f"\r\n--{boundary}--\r\n".encode()
            )
            client.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(end), end))
        head, body = _answer(client, answer)
    assert head.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert body.endswith(
        b"the upload's form fields other than the file are larger than the limit of 4 MiB\n"
    )
    assert _peak_rss(pid) - before < 16 * 2**20  # ~5 MiB; 100 MiB when every field was kept
    assert len(world.double.uploads()) == uploads
