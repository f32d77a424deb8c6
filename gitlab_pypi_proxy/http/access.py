"""Access control in front of the routes: every /simple, /files, /pypi request (at the root and
under a view) and every upload gets an Identity in `scope["identity"]`, or a 401 challenge / 403 /
429 before any route runs. With `[auth] operators` set, /readyz and /metrics need one of those
users; /healthz stays open. The operator API (`/-/...`) always needs credentials, whatever
`anonymous_read` says; which identities may do what there is the route's to say
(gitlab_pypi_proxy.http.operator).

With `anonymous_read` reads cost nothing here: no header is parsed, no hash computed.
"""

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gitlab_pypi_proxy.auth import ANONYMOUS, Authenticator, Identity
from gitlab_pypi_proxy.errors import Forbidden, ProxyError, Unauthorized
from gitlab_pypi_proxy.http.behind_proxy import route_path
from gitlab_pypi_proxy.http.error_responses import response
from gitlab_pypi_proxy.http.view_paths import split_view

_GUARDED = ("/simple", "/files/", "/pypi/")
_UPLOADS = ("/upload", "/legacy")  # and `/`: the index URL without /simple/, as GitLab's is
_OPERATORS = ("/readyz", "/metrics")  # they name the sources and count what users do
OPERATOR_API = "/-/"  # refresh, purge, yank, projects: credentials always


def identity_of(scope: Scope) -> Identity:
    return scope.get("identity", ANONYMOUS)


def is_upload(path: str, method: str) -> bool:
    """A POST or PUT to an upload URL. A GET there is only told how to upload (no credentials)."""
    return method in ("POST", "PUT") and (path == "/" or path.startswith(_UPLOADS))


class AccessControl:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # The path the router routes on: under [server] base_path, without the prefix whether or
        # not the reverse proxy stripped it (`/pypi/simple/` is `/simple/`).
        path = route_path(scope)
        services = scope["app"].state.services
        auth: Authenticator = services.auth
        operator = path in _OPERATORS and bool(auth.config.operators)
        upload = is_upload(path, scope["method"])
        api = path.startswith(OPERATOR_API)
        read = split_view(path, services.composed.views)[1].startswith(_GUARDED)
        # The status page at / names sources and recent uploads: guarded like the index.
        if not (operator or upload or api or read or path == "/"):
            return await self.app(scope, receive, send)
        if auth.config.anonymous_read and not (upload or operator or api):
            return await self.app(scope, receive, send)  # the fast path: identity is ANONYMOUS
        header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
        client = scope.get("client")
        try:
            identity = await self._identify(auth, header, path, upload, operator or api, client)
        except ProxyError as exc:  # outside Starlette's handlers: rendered here, the same way
            return await response(exc)(scope, receive, send)
        scope["identity"] = identity
        await self.app(scope, receive, _private(send))

    @staticmethod
    async def _identify(
        auth: Authenticator,
        header: str | None,
        path: str,
        upload: bool,
        operator: bool,
        client: tuple[str, int] | None,
    ) -> Identity:
        """The identity of the request, or the error it is refused with."""
        try:
            if operator and header is None:
                raise Unauthorized
            identity = await auth.identify(
                header, upload=upload, client=client[0] if client else None
            )
        except Unauthorized:
            what = "uploads need" if upload else "this index needs"
            what = "this endpoint needs" if operator else what
            raise Unauthorized(
                f"{what} a valid user name and password", realm=auth.config.realm
            ) from None
        if path.startswith(OPERATOR_API):
            return identity  # the operator API's routes say who may do what
        if operator and identity.user not in auth.config.operators:
            who = f"user {identity.user}" if identity.user else "these credentials"
            raise Forbidden(f"{who} may not read {path}")
        if not (upload or operator) and identity.readable is not None and not identity.readable:
            raise Forbidden(f"user {identity.user} may not read any source")
        return identity


def _private(send: Send) -> Send:
    """Answers that needed credentials must not be kept by shared caches on the way."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message["headers"] if k != b"cache-control"]
            cache = [v for k, v in message["headers"] if k == b"cache-control"]
            if cache:
                headers.append((b"cache-control", cache[0].replace(b"public", b"private")))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
