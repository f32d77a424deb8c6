"""Small ASGI pieces for testing the middlewares without a server."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2

from gitlab_pypi_proxy.auth import Identity
from gitlab_pypi_proxy.config import load
from gitlab_pypi_proxy.http.app import create_app


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that answers with what it was given."""
    headers = dict(scope["headers"])
    body = json.dumps(
        {
            "scheme": scope["scheme"],
            "host": headers.get(b"host", b"").decode(),
            "client": scope["client"][0],
            "root_path": scope.get("root_path", ""),
        }
    ).encode()
    scope["identity"] = Identity(
        "alice", None, frozenset(), None
    )  # as gitlab_pypi_proxy.http.access leaves it
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-cache", b"HIT")]})
    await send({"type": "http.response.body", "body": body})


def asgi_client(app: Any, peer: str) -> httpx2.AsyncClient:
    transport = httpx2.ASGITransport(app=app, client=(peer, 1234))
    return httpx2.AsyncClient(transport=transport, base_url="http://proxy.internal")


@asynccontextmanager
async def running_app(config: Path) -> AsyncIterator[httpx2.AsyncClient]:
    """The proxy of `config`, started (its lifespan) and asked in process from loopback, as one
    worker serves; `client.app` is the app."""
    app = create_app(load(config))
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app, client=("127.0.0.1", 1234))
        async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
