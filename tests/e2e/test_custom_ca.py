"""A self-hosted GitLab behind TLS with a CA of its own: the proxy trusts what SSL_CERT_FILE names
(httpx2 reads it, else OpenSSL's system store), so the operator's way in is that variable; without
it the answer is a 502 that names the TLS problem. The GitLab double here serves HTTPS with a
certificate signed by a CA made in the test (tests/tls.py)."""

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from tests.proxy_process import start_proxy, write_config
from tests.servers import Server, serve
from tests.tls import Certificates, make_certificates
from tests.unit.asgi import running_app
from tests.worlds import app_with_dependency

TOKEN = "glpat-custom-ca"
SOURCES = [{"name": "platform", "gitlab_project": 11}]


@pytest.fixture(scope="module")
def gitlab(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GitLabDouble, Server, Certificates]]:
    certificates = make_certificates(tmp_path_factory.mktemp("tls"))
    double = app_with_dependency(TOKEN)
    with serve(double.app, certificate=certificates.server) as server:
        yield double, server, certificates


def test_with_the_ca_in_ssl_cert_file_the_proxy_serves_gitlabs_pages_and_files(
    gitlab, tmp_path: Path
) -> None:
    double, server, certificates = gitlab
    assert server.url.startswith("https://")
    config = write_config(tmp_path, server.url, SOURCES, token=TOKEN)
    proxy = start_proxy(config, env={"SSL_CERT_FILE": str(certificates.ca)})
    try:
        page = httpx2.get(f"{proxy.url}/simple/app-main/")
        assert page.status_code == 200, page.text
        wheel = next(f for f in double.files if f.name == "app-main")
        assert wheel.filename in page.text
        served = httpx2.get(f"{proxy.url}/files/{wheel.sha256}/{wheel.filename}")
        assert (served.status_code, served.content) == (200, wheel.content)
    finally:
        proxy.stop()


async def test_without_it_the_answer_is_a_502_naming_the_tls_problem(
    gitlab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server, _ = gitlab
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):  # the system's store: it lacks the test's CA
        monkeypatch.delenv(name, raising=False)
    async with running_app(write_config(tmp_path, server.url, SOURCES, token=TOKEN)) as client:
        page = await client.get("/simple/app-main/")
    host = server.url.removeprefix("https://")
    assert page.status_code == 502
    assert page.text == (
        f"upstream platform unavailable: TLS: the certificate of {host} is not trusted "
        "(unable to get local issuer certificate)\n"
    )
