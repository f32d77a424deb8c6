"""The access middleware: operator endpoints behind `[auth] operators`, 429 for a client whose
logins keep failing."""

from types import SimpleNamespace
from typing import Any

import httpx2
import pytest

from gitlab_pypi_proxy.auth import Authenticator
from gitlab_pypi_proxy.config import AuthConfig, UserConfig
from gitlab_pypi_proxy.http.access import AccessControl
from gitlab_pypi_proxy.http.behind_proxy import BehindProxy
from tests.unit.asgi import asgi_client

USERS = (
    UserConfig("monitor", password="monitor-pw", read=frozenset()),
    UserConfig("reader", password="reader-pw"),
)


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"reached"})


def _client(config: AuthConfig, peer: str = "192.0.2.1") -> httpx2.AsyncClient:
    auth = Authenticator(config, USERS, frozenset(), {}, frozenset())
    services = SimpleNamespace(
        services=SimpleNamespace(auth=auth, composed=SimpleNamespace(views={}))
    )
    guarded = AccessControl(_ok)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["app"] = SimpleNamespace(state=services)  # as Starlette leaves it
        await guarded(scope, receive, send)

    return asgi_client(app, peer)


@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
async def test_operator_endpoints_need_an_operator_when_operators_are_set(path: str) -> None:
    config = AuthConfig(anonymous_read=True, operators=frozenset({"monitor"}))
    async with _client(config) as client:
        anonymous = await client.get(path)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Basic realm="gitlab-pypi-proxy"'
        assert anonymous.text == "this endpoint needs a valid user name and password\n"
        wrong = await client.get(path, auth=("monitor", "nope"))
        assert wrong.status_code == 401
        reader = await client.get(path, auth=("reader", "reader-pw"))
        assert (reader.status_code, reader.text) == (403, f"user reader may not read {path}\n")
        monitor = await client.get(path, auth=("monitor", "monitor-pw"))
        assert (monitor.status_code, monitor.text) == (200, "reached")
        assert (await client.get("/healthz")).status_code == 200  # liveness stays open
        assert (await client.get("/simple/")).status_code == 200  # anonymous reads as before


@pytest.mark.parametrize("path", ["/readyz", "/metrics", "/healthz"])
async def test_without_operators_the_operator_endpoints_stay_open(path: str) -> None:
    config = AuthConfig(anonymous_read=False)
    async with _client(config) as client:
        assert (await client.get(path)).status_code == 200


async def test_a_client_whose_logins_keep_failing_gets_429_with_retry_after() -> None:
    config = AuthConfig(anonymous_read=False, failed_logins_per_minute=2)
    async with _client(config) as client:
        assert (await client.get("/simple/", auth=("reader", "reader-pw"))).status_code == 200
        for attempt in range(2):
            response = await client.get("/simple/", auth=("reader", f"guess-{attempt}"))
            assert response.status_code == 401
        refused = await client.get("/simple/", auth=("reader", "guess-2"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        assert refused.text == "too many failed logins from this address: retry in 30 s\n"
        assert (await client.get("/simple/")).status_code == 401  # no credentials: a challenge
        # credentials accepted lately still work from that address; new ones wait
        assert (await client.get("/simple/", auth=("reader", "reader-pw"))).status_code == 200
        assert (await client.get("/simple/", auth=("monitor", "monitor-pw"))).status_code == 429
    async with _client(config, peer="192.0.2.2") as other:
        assert (await other.get("/simple/", auth=("reader", "guess-3"))).status_code == 401


@pytest.mark.parametrize("path", ["/pypi/simple/", "/pypi/simple/x/", "/pypi/files/a/b", "/pypi/"])
async def test_under_a_base_path_the_prefixed_paths_are_guarded_too(path: str) -> None:
    """A reverse proxy that passes the prefix on: /pypi/simple/ is /simple/ to the router, and
    must be to the access check too."""
    config = AuthConfig(anonymous_read=False)
    auth = Authenticator(config, USERS, frozenset(), {}, frozenset())
    state = SimpleNamespace(services=SimpleNamespace(auth=auth, composed=SimpleNamespace(views={})))

    async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["app"] = SimpleNamespace(state=state)
        await AccessControl(_ok)(scope, receive, send)

    app = BehindProxy(with_state, (), "/pypi")
    async with asgi_client(app, "192.0.2.1") as client:
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, auth=("reader", "reader-pw"))).status_code == 200
