"""An httpx2 transport over an httpcore2 connection pool built here, with public API on both
sides: the pool's connections are this proxy's sockets (gitlab_pypi_proxy.sources.upstream_sockets)
and the pool is in hand (the watchdog of gitlab_pypi_proxy.sources.upstream_pool closes its idle
connections the upstream closed).

httpx2's own AsyncHTTPTransport builds its pool privately, with httpcore2's default network
backend and no way to pass another. What it adds over the pool, translating requests, responses
and errors between the two libraries' types, is done here the same way: an httpcore2 error
becomes the httpx2 error of the same name, with the original as its cause; any other exception
(a test's mock raising httpx2's own) passes unchanged. A proxy URL (HTTP_PROXY and the like)
gets httpcore2's proxy pool over the same sockets.
"""

import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator

import httpcore2
import httpx2

from gitlab_pypi_proxy.sources.upstream_sockets import Backend

_BACKEND = Backend()

# httpcore2's errors and httpx2's of the same meaning; the most specific match wins
_ERRORS: dict[type[Exception], type[httpx2.TransportError]] = {
    httpcore2.TimeoutException: httpx2.TimeoutException,
    httpcore2.ConnectTimeout: httpx2.ConnectTimeout,
    httpcore2.ReadTimeout: httpx2.ReadTimeout,
    httpcore2.WriteTimeout: httpx2.WriteTimeout,
    httpcore2.PoolTimeout: httpx2.PoolTimeout,
    httpcore2.NetworkError: httpx2.NetworkError,
    httpcore2.ConnectError: httpx2.ConnectError,
    httpcore2.ReadError: httpx2.ReadError,
    httpcore2.WriteError: httpx2.WriteError,
    httpcore2.ProxyError: httpx2.ProxyError,
    httpcore2.UnsupportedProtocol: httpx2.UnsupportedProtocol,
    httpcore2.ProtocolError: httpx2.ProtocolError,
    httpcore2.LocalProtocolError: httpx2.LocalProtocolError,
    httpcore2.RemoteProtocolError: httpx2.RemoteProtocolError,
}


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = next((_ERRORS[kind] for kind in type(exc).__mro__ if kind in _ERRORS), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _Body(httpx2.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)  # httpcore2's streams have one
        if close is not None:
            with _as_httpx_errors():
                await close()


class PoolTransport(httpx2.AsyncBaseTransport):
    """httpx2's requests sent through `pool`."""

    def __init__(self, pool: httpcore2.AsyncConnectionPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        core = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            answer = await self.pool.handle_async_request(core)
        return httpx2.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream),  # type: ignore[arg-type]
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        with _as_httpx_errors():
            await self.pool.aclose()


def pool_transport(
    limits: httpx2.Limits, ssl_context: ssl.SSLContext, proxy: str | None = None
) -> PoolTransport:
    """A transport with a pool of its own, direct or through `proxy` (http, https or socks5)."""
    pooled = {
        "ssl_context": ssl_context,
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
        "network_backend": _BACKEND,
    }
    if proxy is None:
        return PoolTransport(httpcore2.AsyncConnectionPool(**pooled))  # type: ignore[arg-type]
    via = httpx2.Proxy(proxy)
    proxy_url = httpcore2.URL(
        scheme=via.url.raw_scheme,
        host=via.url.raw_host,
        port=via.url.port,
        target=via.url.raw_path,
    )
    if via.url.scheme in ("socks5", "socks5h"):
        pool = httpcore2.AsyncSOCKSProxy(proxy_url, proxy_auth=via.raw_auth, **pooled)
    else:
        pool = httpcore2.AsyncHTTPProxy(
            proxy_url,
            proxy_auth=via.raw_auth,
            proxy_headers=via.headers.raw,
            proxy_ssl_context=via.ssl_context,
            **pooled,  # type: ignore[arg-type]
        )
    return PoolTransport(pool)
