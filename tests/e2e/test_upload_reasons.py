"""What an uploader sees when GitLab refuses an upload. The proxy's log says GitLab's
status once; uv publish shows the proxy's one-line reason; twine prints the status line's
reason phrase, which is that reason (gitlab_pypi_proxy.internals.reason_phrases), and the body with
--verbose."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from tests.clients import printed, twine_upload, uv_publish
from tests.proxy_process import ProxyProcess, start_proxy, write_config
from tests.servers import serve
from tests.worlds import UPLOADER_CONFIG, UPLOADER_PASSWORD, app_taking_uploads, upload_wheel

TOKEN = "glpat-upload-reasons"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    directory = tmp_path_factory.mktemp("upload-reasons")
    with serve(app_taking_uploads(TOKEN).app) as server:
        sources = [{"name": "platform", "gitlab_project": 11}]
        config = write_config(directory, server.url, sources, token=TOKEN, extra=UPLOADER_CONFIG)
        running = start_proxy(config)
        try:
            yield running
        finally:
            running.stop()


def test_the_log_says_gitlabs_status_once(proxy: ProxyProcess) -> None:
    filename, first = upload_wheel(proxy.url, "twice-uploaded", "1.0")
    assert first.status_code == 201
    _, again = upload_wheel(proxy.url, "twice-uploaded", "1.0")
    assert again.status_code == 409
    assert again.text == f"File already exists: {filename}\n"
    refused = [line for line in proxy.log().splitlines() if "GitLab refused" in line]
    assert len(refused) == 1
    assert refused[0].endswith(
        f"GitLab refused {filename} for platform: HTTP 400: Bad request - Validation failed: "
        "File name has already been taken"
    )
    assert "400 400" not in proxy.log()


def test_what_twine_and_uv_publish_show_of_a_refusal(proxy: ProxyProcess, tmp_path: Path) -> None:
    filename, data = make_wheel("shown-reason", "1.0")
    wheel = tmp_path / filename
    wheel.write_bytes(data)
    upload = f"{proxy.url}/upload/"
    login = {"user": "ci", "password": UPLOADER_PASSWORD, "home": tmp_path / "home"}
    assert twine_upload(upload, [wheel], **login).returncode == 0
    reason = f"File already exists: {filename}"

    plain = twine_upload(upload, [wheel], **login)
    shown = plain.stdout + plain.stderr
    assert plain.returncode != 0
    assert "409 Conflict" in shown  # twine's own phrase for the status, then the server's:
    assert reason in shown

    verbose = twine_upload(upload, [wheel], **login, extra=("--verbose",))
    assert verbose.returncode != 0
    assert reason in verbose.stdout + verbose.stderr

    uv = uv_publish(upload, [wheel], **login)
    assert uv.returncode != 0
    assert reason in printed(uv)
