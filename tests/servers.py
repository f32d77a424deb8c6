"""Serve an ASGI app with uvicorn on a loopback port in a background thread, for the tests."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from tests.proxy_process import free_port
from tests.waiting import wait_until

_STARTUP_SECONDS = 10


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
def serve(app: object, *, host: str = "127.0.0.1") -> Iterator[Server]:
    port = free_port()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError(f"test server on port {port} did not start")
        return server.started

    wait_until(started, f"the test server on port {port} to start", _STARTUP_SECONDS)
    running = Server(f"http://{host}:{port}", port, server, thread)
    try:
        yield running
    finally:
        running.stop()
