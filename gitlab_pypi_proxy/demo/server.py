"""Serve an ASGI app with uvicorn on a loopback port in a background thread: the demo's GitLab
double, and the tests' doubles (tests/servers.py), over HTTPS when given a certificate."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

_STARTUP_SECONDS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop listening; afterwards a connection to the port is refused."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serve(
    app: object,
    *,
    host: str = "127.0.0.1",
    http: str = "auto",
    certificate: tuple[str, str] | None = None,
) -> Iterator[Server]:
    """`certificate`: (certificate chain file, key file), both PEM, to serve HTTPS."""
    port = free_port()
    certfile, keyfile = certificate or (None, None)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http,  # type: ignore[arg-type]
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + _STARTUP_SECONDS
    while not server.started:  # polled with a deadline: uvicorn has no "started" event
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on port {port} did not start")
        time.sleep(0.02)
    scheme = "https" if certificate else "http"
    running = Server(f"{scheme}://{host}:{port}", port, server, thread)
    try:
        yield running
    finally:
        running.stop()
