"""What a reverse proxy in front changes about a request: X-Forwarded-* and a path prefix.

X-Forwarded-For/Proto/Host are believed only from a peer in `[server] trusted_proxies`, and then
only the last value (the one that trusted peer set). `[server] base_path` ("/pypi") becomes the
ASGI root_path, whether or not the reverse proxy stripped it from the path: links and redirects
are relative, and the status page builds its URLs from the request's base URL.
"""

import ipaddress
from functools import lru_cache
from typing import Any

Scope = dict[str, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BehindProxy:
    def __init__(self, app: Any, trusted_proxies: tuple[str, ...], base_path: str) -> None:
        self.app, self.base_path = app, base_path.rstrip("/")
        self.networks = tuple(ipaddress.ip_network(t, strict=False) for t in trusted_proxies)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if self.networks and client and _trusted(client[0], self.networks):
            self._apply_forwarded(scope)
        if self.base_path:
            if scope["path"] == self.base_path:  # "/pypi" → "/pypi/", relative like every redirect
                last = self.base_path.rsplit("/", 1)[1]
                await _redirect(send, f"{last}/")
                return
            scope["root_path"] = scope.get("root_path", "") + self.base_path
        await self.app(scope, receive, send)

    def _apply_forwarded(self, scope: Scope) -> None:
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        found = {k.lower(): v.decode("latin-1") for k, v in headers if k.lower().startswith(b"x-f")}
        proto = _last(found.get(b"x-forwarded-proto"))
        if proto in ("http", "https"):
            scope["scheme"] = proto
        host = _last(found.get(b"x-forwarded-host"))
        if host and all(c.isalnum() or c in ".-:[]" for c in host):
            headers = [(k, v) for k, v in headers if k.lower() != b"host"]
            headers.append((b"host", host.encode("latin-1")))
            scope["headers"] = headers
        forwarded_for = found.get(b"x-forwarded-for")
        if forwarded_for:
            # the nearest address that is not one of our proxies is the client
            hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
            client = next((h for h in reversed(hops) if not _trusted(h, self.networks)), None)
            if client is not None:
                scope["client"] = (client, 0)


def _last(value: str | None) -> str | None:
    return value.rsplit(",", 1)[-1].strip() if value else None


def route_path(scope: Scope) -> str:
    """The path the router routes on: without the root_path (`[server] base_path`), whether or
    not the reverse proxy stripped it (`/pypi/simple/` and `/simple/` are both `/simple/`)."""
    # Starlette's get_route_path (starlette/_utils.py, 1.10.0), copied: it is private there
    path: str = scope["path"]
    root_path = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


@lru_cache(maxsize=1024)
def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


async def _redirect(send: Any, location: str) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 301, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
