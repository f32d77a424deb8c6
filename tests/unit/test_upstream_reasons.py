"""Why an upstream gave no answer, as the log, /readyz and the client are told: connection
refused, DNS, TLS, timeouts, each naming the host and port (never a URL's credentials)."""

import socket
import ssl
import threading
from collections.abc import Iterator

import httpx2
import pytest

from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.sources.upstream import Upstream, failure_reason, host_port


class Heard:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, str, str]] = []

    def request_done(self, source, status, reason="", *, timeout=False, upstream=""):  # type: ignore[no-untyped-def]
        self.calls.append((source, status, reason, upstream))

    def pool_stalled(self, pool, reason):  # type: ignore[no-untyped-def]
        pass


@pytest.fixture
def plain_tcp() -> Iterator[int]:
    """A port that answers anything with a plain HTTP line (a TLS client's handshake fails)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(1000)
                connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _failure(url: str) -> tuple[SourceUnavailable, Heard]:
    heard = Heard()
    upstream = Upstream(httpx2.AsyncClient(timeout=5), heard)
    try:
        with pytest.raises(SourceUnavailable) as caught:
            await upstream.get("platform", url)
    finally:
        await upstream.aclose()
    return caught.value, heard


async def test_connection_refused_names_host_and_port() -> None:
    port = _closed_port()
    failure, heard = await _failure(f"http://user:s3cret@127.0.0.1:{port}/simple/")
    assert failure.reason == f"connection refused by 127.0.0.1:{port}"
    assert str(failure) == f"upstream platform unavailable: connection refused by 127.0.0.1:{port}"
    assert heard.calls == [("platform", None, failure.reason, f"127.0.0.1:{port}")]


async def test_a_tls_handshake_that_fails_says_tls(plain_tcp: int) -> None:
    failure, _ = await _failure(f"https://127.0.0.1:{plain_tcp}/simple/")
    assert failure.reason.startswith(f"TLS handshake with 127.0.0.1:{plain_tcp} failed (")


def _raised(exc: httpx2.HTTPError, cause: BaseException | None) -> httpx2.HTTPError:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            _raised(httpx2.ConnectError("x"), socket.gaierror(-2, "Name or service not known")),
            "DNS: cannot resolve gitlab.example.com (Name or service not known)",
        ),
        (httpx2.ConnectTimeout("x"), "connecting to gitlab.example.com:443 timed out"),
        (httpx2.ReadTimeout("x"), "gitlab.example.com:443 timed out"),
        (
            _raised(httpx2.ConnectError("x"), ssl.SSLCertVerificationError(1, "verify failed")),
            "TLS: the certificate of gitlab.example.com:443 is not trusted (verification failed)",
        ),
        (
            _raised(httpx2.ReadError("x"), ConnectionResetError(104, "Connection reset by peer")),
            "connection reset by gitlab.example.com:443",
        ),
        (
            httpx2.RemoteProtocolError("x"),
            "gitlab.example.com:443 closed the connection before answering in full",
        ),
    ],
)
def test_reasons(exc: httpx2.HTTPError, reason: str) -> None:
    assert failure_reason(exc, "gitlab.example.com:443") == reason


def test_host_port_spells_the_default_port_and_drops_credentials() -> None:
    assert host_port(httpx2.URL("https://oauth2:t@gitlab.example.com/api")) == (
        "gitlab.example.com:443"
    )
    assert host_port(httpx2.URL("http://[::1]:8080/")) == "[::1]:8080"
