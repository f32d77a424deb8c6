"""What a reverse proxy in front changes: X-Forwarded-* from trusted peers only, a path prefix."""

import pytest

from gitlab_pypi_proxy.http.behind_proxy import BehindProxy, route_path
from tests.unit.asgi import asgi_client, echo_app

FORWARDED = {
    "x-forwarded-proto": "https",
    "x-forwarded-host": "pypi.example.com",
    "x-forwarded-for": "203.0.113.7, 10.1.2.3",
}


async def test_forwarded_headers_only_from_trusted_proxies() -> None:
    app = BehindProxy(echo_app, ("10.0.0.0/8",), "")
    async with asgi_client(app, "10.9.9.9") as trusted:
        seen = (await trusted.get("/", headers=FORWARDED)).json()
    assert seen == {
        "scheme": "https",
        "host": "pypi.example.com",
        "client": "203.0.113.7",
        "root_path": "",
    }
    async with asgi_client(app, "198.51.100.1") as stranger:
        seen = (await stranger.get("/", headers=FORWARDED)).json()
    assert seen["scheme"] == "http" and seen["host"] == "proxy.internal"
    assert seen["client"] == "198.51.100.1"


async def test_base_path_becomes_root_path_with_or_without_the_prefix() -> None:
    app = BehindProxy(echo_app, (), "/pypi")
    async with asgi_client(app, "127.0.0.1") as client:
        assert (await client.get("/pypi/simple/")).json()["root_path"] == "/pypi"
        assert (await client.get("/simple/")).json()["root_path"] == "/pypi"  # prefix stripped
        bare = await client.get("/pypi")
    assert bare.status_code == 301 and bare.headers["location"] == "pypi/"


@pytest.mark.parametrize(
    ("path", "root_path", "routed"),
    [
        ("/simple/", "", "/simple/"),
        ("/pypi/simple/", "/pypi", "/simple/"),  # the prefix kept by the reverse proxy
        ("/simple/", "/pypi", "/simple/"),  # stripped by it
        ("/pypi", "/pypi", ""),
        ("/pypix/simple/", "/pypi", "/pypix/simple/"),  # a longer name, not the prefix
    ],
)
def test_the_path_routed_on(path: str, root_path: str, routed: str) -> None:
    assert route_path({"path": path, "root_path": root_path}) == routed
