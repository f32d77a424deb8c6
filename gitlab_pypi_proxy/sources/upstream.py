"""HTTP to upstreams: one shared client, no redirects on pages, no credentials across origins,
no cookies kept, and every request within the bounds of gitlab_pypi_proxy.sources.upstream_bounds
(its source's share of connections, a deadline, a page size) and, for a `url` source's files,
the hosts of gitlab_pypi_proxy.sources.file_hosts.

The transport knows nothing of routes or health pages: it counts each call in the metrics and
reports its outcome (and its pools' stalls) to the `UpstreamObserver` it is given.
"""

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol
from urllib.parse import urljoin

import httpx2

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.errors import FileNotFoundUpstream, RateLimited, SourceUnavailable
from gitlab_pypi_proxy.sources.file_hosts import FileHosts
from gitlab_pypi_proxy.sources.upstream_bounds import (
    MAX_PAGE_SIZE,
    POOL_SIZE,
    Bounds,
    Progress,
    Slots,
    deadline_passed,
    page_body,
    share,
)
from gitlab_pypi_proxy.sources.upstream_pool import WatchedTransport
from gitlab_pypi_proxy.sources.upstream_proxies import environment_proxies
from gitlab_pypi_proxy.sources.upstream_transport import pool_transport

CHUNK = 256 * 1024
_MAX_RANGE = 32 * 2**20  # a ranged read's answer: twice the largest METADATA read
_MAX_REDIRECTS = 5
_RETRY_AFTER = 60.0  # a 429 without a usable Retry-After: GitLab's limits count per minute
_MAX_RETRY_AFTER = 3600.0
_KEEP_ALIVE = 50

Request = Callable[[dict[str, str], str], AbstractAsyncContextManager[httpx2.Response]]
"""A source's request for one file it listed, with its credentials: (headers, method) → the
streamed answer (`Upstream.stream`, through the GitLab budget where it applies)."""


@dataclass(frozen=True)
class Head:
    """What an upstream says of a file without sending it: its size (None if it does not say)
    and whether it serves byte ranges of it."""

    size: int | None
    ranges: bool = False


class UpstreamObserver(Protocol):
    """Who hears how upstream calls went (sources/upstream_health.py in the server)."""

    def request_done(
        self,
        source: str,
        status: int | None,
        reason: str = "",
        *,
        timeout: bool = False,
        upstream: str = "",
    ) -> None:
        """One call to `source` (at `upstream`, its host:port) ended: an HTTP `status`, or None
        when it failed. A `reason` marks a failure, also with a status (401 to the proxy's own
        token); a 5xx is one too."""
        ...

    def pool_stalled(self, pool: str, reason: str | None) -> None:
        """A connection pool gets no request out (`reason`), or does again (None)."""
        ...


class Unobserved:
    """An observer that hears nothing: the command line's, and the tests'."""

    def request_done(
        self,
        source: str,
        status: int | None,
        reason: str = "",
        *,
        timeout: bool = False,
        upstream: str = "",
    ) -> None:
        pass

    def pool_stalled(self, pool: str, reason: str | None) -> None:
        pass


UNOBSERVED = Unobserved()


def make_client(
    timeout: float, observer: UpstreamObserver = UNOBSERVED, *, connections: int = POOL_SIZE
) -> httpx2.AsyncClient:
    """The one client every upstream request goes through (keep-alive, pooled, watched).

    Each pool, the direct one and one per proxy that HTTP(S)_PROXY/ALL_PROXY name (NO_PROXY
    honoured: gitlab_pypi_proxy.sources.upstream_proxies), is a WatchedTransport of
    `connections` connections: see gitlab_pypi_proxy.sources.upstream_pool. Its connections read
    at most one chunk ahead of their reader (gitlab_pypi_proxy.sources.upstream_sockets). It
    keeps no cookies: a cookie one upstream sets would ride along with later requests, under
    other identities (passthrough users, the proxy's own token)."""
    limits = httpx2.Limits(
        max_connections=connections, max_keepalive_connections=min(_KEEP_ALIVE, connections)
    )
    # SSL_CERT_FILE / SSL_CERT_DIR honoured; one context for every pool and its replacements
    ssl_context = httpx2.create_ssl_context()

    def pool(name: str, proxy: str | None = None) -> WatchedTransport:
        return WatchedTransport(
            lambda: pool_transport(limits, ssl_context, proxy),
            timeout,
            name=name,
            observer=observer,
        )

    # a transport of our own turns httpx2's environment proxies off: they are mounted here
    mounts = {
        pattern: pool(f"proxy for {pattern}", url) if url else None
        for pattern, url in environment_proxies().items()
    }
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
        transport=pool("direct"),
        mounts=mounts,
        follow_redirects=False,
        headers={"User-Agent": "gitlab-pypi-proxy"},
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # no domain: none stored
    )


def make_upstream(
    timeout: float,
    observer: UpstreamObserver = UNOBSERVED,
    *,
    sources: int = 1,
    max_page_size: int = MAX_PAGE_SIZE,
) -> "Upstream":
    """The transport of a worker with `sources` sources: a pool that holds every source's share
    of connections at once (gitlab_pypi_proxy.sources.upstream_bounds)."""
    per_source = share(sources)
    client = make_client(timeout, observer, connections=per_source * max(1, sources))
    return Upstream(client, observer, Bounds(timeout, max_page_size, per_source))


def host_port(url: httpx2.URL) -> str:
    """`host:port` of a URL, the port spelt out (never its userinfo)."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{port}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def failure_reason(exc: httpx2.HTTPError, host: str) -> str:
    """Why a request to `host` got no answer, as an operator needs it: refused, DNS, TLS,
    timeout, reset (from the exceptions under httpx2's)."""
    chain = _chain(exc)
    if isinstance(exc, httpx2.ConnectTimeout):
        return f"connecting to {host} timed out"
    if isinstance(exc, httpx2.TimeoutException):
        return f"{host} timed out"
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {host}"
        if isinstance(cause, socket.gaierror):
            return f"DNS: cannot resolve {host.rsplit(':', 1)[0]} ({cause.strerror})"
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = vars(cause).get("verify_message") or "verification failed"
            return f"TLS: the certificate of {host} is not trusted ({why})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {host} failed ({cause.reason or cause})"
        if isinstance(cause, ConnectionResetError):
            return f"connection reset by {host}"
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect to {host}: {cause.strerror}"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return f"{host} closed the connection before answering in full"
    return f"{type(exc).__name__} from {host}"


def _same_origin(a: httpx2.URL, b: httpx2.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), within sane bounds."""
    seconds = _RETRY_AFTER
    if value:
        value = value.strip()
        if value.isdigit():
            seconds = float(value)
        else:
            with contextlib.suppress(TypeError, ValueError):
                seconds = parsedate_to_datetime(value).timestamp() - (now or time.time())
    return min(max(seconds, 1.0), _MAX_RETRY_AFTER)


def _rate_limited(source: str, response: httpx2.Response) -> RateLimited | None:
    """A 429 is "not now", never "not here": the caller must not treat the name as missing."""
    if response.status_code != 429:
        return None
    wait = retry_after(response.headers.get("retry-after"))
    return RateLimited(source, f"HTTP 429 (its rate limit), retry after {wait:.0f} s", wait)


@dataclass(frozen=True)
class Upstream:
    """The shared client, the observer its calls are reported to and the bounds they keep.
    Every call names the source it is for: that name is what errors, metrics and health speak
    of, and whose share of the connections it takes."""

    client: httpx2.AsyncClient
    observer: UpstreamObserver = UNOBSERVED
    bounds: Bounds = field(default_factory=Bounds)
    slots: Slots = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", Slots(self.bounds))

    async def aclose(self) -> None:
        await self.client.aclose()

    def _answered(
        self, source: str, response: httpx2.Response, started: float, refused: str | None = None
    ) -> None:
        status = response.status_code
        metrics.UPSTREAM.labels(source, metrics.upstream_outcome(status)).inc()
        metrics.UPSTREAM_LATENCY.labels(source).observe(time.monotonic() - started)
        host = host_port(response.request.url)
        reason = ""
        if refused and status == 401:
            reason = f"HTTP {status} from {host}: {refused}"
        self.observer.request_done(source, status, reason, upstream=host)

    def _failed(self, source: str, exc: httpx2.HTTPError) -> SourceUnavailable:
        try:
            host = host_port(exc.request.url)
        except RuntimeError:  # an error raised before any request was made
            host = source
        timeout = isinstance(exc, httpx2.TimeoutException)
        return self._down(
            source, SourceUnavailable(source, failure_reason(exc, host), timeout=timeout), host
        )

    def _down(self, source: str, failure: SourceUnavailable, host: str) -> SourceUnavailable:
        """`failure`, counted and reported: the source did not answer (in time)."""
        metrics.UPSTREAM.labels(source, metrics.upstream_outcome(None, failure.timeout)).inc()
        self.observer.request_done(
            source, None, failure.reason, timeout=failure.timeout, upstream=host
        )
        failure.reported = True
        return failure

    async def get(
        self,
        source: str,
        url: str,
        *,
        auth: httpx2.Auth | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str | int] | None = None,
        refused: str | None = None,
    ) -> httpx2.Response:
        """GET a page or API answer without following redirects; a 3xx comes back to the caller
        as it is. The answer is read whole (decoded) within the timeout, at most
        `[cache] max_page_size` bytes of it.

        Connection errors, timeouts and 5xx raise SourceUnavailable naming `source`, as does a
        larger answer; a 429 RateLimited. `refused`: what a 401 means (the proxy's own
        credentials refused): the source is then reported down for that reason.
        """
        request = self.client.build_request("GET", url, headers=headers, params=params)
        host = host_port(request.url)
        async with self.slots.held(source):
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.bounds.timeout):
                    response = await self.client.send(request, auth=auth, stream=True)
                    try:
                        self._answered(source, response, started, refused)
                        body = await page_body(source, response, self.bounds, host)
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise self._down(source, deadline_passed(source, host, self.bounds), host) from None
            except httpx2.HTTPError as exc:
                raise self._failed(source, exc) from None
        if response.status_code >= 500:  # reported as a failure by _answered
            raise SourceUnavailable(source, f"HTTP {response.status_code}", reported=True)
        if (limited := _rate_limited(source, response)) is not None:
            raise limited
        return _whole(response, body)

    async def post(
        self,
        source: str,
        url: str,
        *,
        content: AsyncIterator[bytes],
        headers: dict[str, str],
        auth: httpx2.Auth | None,
        timeout: httpx2.Timeout,
    ) -> httpx2.Response:
        """POST a streamed body, never following a redirect (it would resend the credentials).

        Connection errors and timeouts raise SourceUnavailable naming `source`; every HTTP
        answer, 5xx included, comes back to the caller.
        """
        async with self.slots.held(source):
            try:
                return await self.client.post(
                    url, content=content, headers=headers, auth=auth, timeout=timeout
                )
            except httpx2.HTTPError as exc:
                raise self._failed(source, exc) from None

    @asynccontextmanager
    async def stream(
        self,
        source: str,
        url: str,
        *,
        auth: httpx2.Auth | None = None,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        refused: str | None = None,
        hosts: FileHosts | None = None,
    ) -> AsyncIterator[httpx2.Response]:
        """Stream a file, following redirects by hand so credentials never leave their origin.

        GitLab answers a file with 302 to a signed object-storage URL on another host: that
        request goes out with no credentials at all. With `hosts` (a `url` source's), the file
        and every redirect hop must be where they allow, or SourceUnavailable is raised before
        anything is sent there. A 206 comes back only to a caller that sent a Range.
        `method="HEAD"` asks for the headers alone. Each hop's answer must begin within the
        timeout; its body is read through `chunks`.
        """
        client = self.client
        target = httpx2.URL(url)
        origin = target
        async with self.slots.held(source):
            for _ in range(_MAX_REDIRECTS + 1):
                if hosts is not None and not hosts.allows(target):
                    raise hosts.refused(target, redirected=target is not origin)
                request = client.build_request(
                    method, target, headers={"Accept-Encoding": "identity", **(headers or {})}
                )
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self.bounds.timeout):
                        response = await client.send(
                            request,
                            auth=auth if _same_origin(target, origin) else None,
                            stream=True,
                        )
                except TimeoutError:
                    host = host_port(target)
                    raise self._down(
                        source, deadline_passed(source, host, self.bounds), host
                    ) from None
                except httpx2.HTTPError as exc:
                    raise self._failed(source, exc) from None
                self._answered(source, response, started, refused if target == origin else None)
                if response.is_redirect and "location" in response.headers:
                    await response.aclose()
                    target = httpx2.URL(urljoin(str(target), response.headers["location"]))
                    continue
                try:
                    if response.status_code >= 500:
                        status = response.status_code
                        raise SourceUnavailable(source, f"HTTP {status}", reported=True)
                    if (limited := _rate_limited(source, response)) is not None:
                        raise limited
                    if response.status_code not in (200, 206):
                        raise FileNotFoundUpstream(f"{source} answered HTTP {response.status_code}")
                    yield response
                finally:
                    await response.aclose()
                return
        raise SourceUnavailable(source, "too many redirects")

    async def chunks(self, source: str, response: httpx2.Response) -> AsyncIterator[bytes]:
        """The body of a streamed response in chunks of about CHUNK bytes, as long as it keeps
        arriving (each piece counts as progress, however small), with transport errors turned
        into SourceUnavailable."""
        host = host_port(response.request.url)
        progress = Progress(source, host, self.bounds)
        pieces = response.aiter_bytes()
        buffer = bytearray()
        try:
            while True:
                began = time.monotonic()
                try:
                    async with asyncio.timeout(progress.allowance()):
                        piece = await anext(pieces)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._down(source, progress.too_slow(), host) from None
                progress.got(len(piece), time.monotonic() - began)
                buffer += piece
                if len(buffer) >= CHUNK:
                    yield bytes(buffer)
                    buffer.clear()
        except httpx2.HTTPError as exc:
            raise self._failed(source, exc) from None
        finally:
            await pieces.aclose()
        if buffer:
            yield bytes(buffer)

    async def head(self, request: Request) -> Head:
        """The size of a file and whether its upstream serves ranges, without downloading it:
        the upstream's HEAD (`Accept-Ranges: bytes`); where that gives no size (object storage
        signs its redirect for GET only, so a HEAD there is refused), a one-byte ranged GET,
        whose 206 and Content-Range say both. Raises FileNotFoundUpstream or SourceUnavailable."""
        try:
            async with request({}, "HEAD") as response:
                size = _total(response)
                ranges = response.headers.get("accept-ranges", "").strip().lower() == "bytes"
        except FileNotFoundUpstream:
            size = None  # not there, or a HEAD refused on the way: the ranged GET tells which
        if size is not None:
            return Head(size, ranges)
        async with request({"Range": "bytes=0-0"}, "GET") as response:
            # closed unread if the whole file is coming
            return Head(_total(response), response.status_code == 206)

    async def read_range(
        self, source: str, request: Request, spec: str
    ) -> tuple[bytes, str | None]:
        """One ranged read (`spec` is a Range header value): the bytes and the Content-Range,
        or (b"", None) when the upstream ignores the range (the whole file is not read)."""
        async with request({"Range": spec}, "GET") as response:
            if response.status_code != 206:
                return b"", None  # the whole file is coming: not read, closed at once
            parts, total = [], 0
            async for chunk in self.chunks(source, response):
                parts.append(chunk)
                total += len(chunk)
                if total > _MAX_RANGE:
                    raise SourceUnavailable(source, "range answer too large")
            return b"".join(parts), response.headers.get("content-range")


def _whole(response: httpx2.Response, body: bytes) -> httpx2.Response:
    """`response` with its decoded `body` read: what the caller of `get` reads, as it would
    from an unstreamed answer."""
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx2.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=response.extensions,
    )


def content_range(response: httpx2.Response) -> str | None:
    """The Content-Range of a 206 (the answer holds that range only), else None."""
    return response.headers.get("content-range") if response.status_code == 206 else None


def _total(response: httpx2.Response) -> int | None:
    if response.status_code == 206:  # "bytes 0-0/12345"
        total = response.headers.get("content-range", "").rpartition("/")[2]
    else:
        total = response.headers.get("content-length", "")
    return int(total) if total.isascii() and total.isdigit() else None
