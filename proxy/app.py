"""HTTP routes: parse the request, ask the index or the caches, render. Nothing else lives here."""

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace

import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from proxy import health, metrics, runtime_dir, upstream
from proxy.access import AccessControl, identity_of, may_read_file
from proxy.access_log import AccessLog
from proxy.auth import Authenticator
from proxy.behind_proxy import BehindProxy
from proxy.budget import Budget
from proxy.cache.details import DetailsStore
from proxy.cache.files import CacheUnwritable, FileStore, verified
from proxy.cache.metadata import MetadataStore
from proxy.cache.pages import Offline, PageCache
from proxy.config import Config
from proxy.core_metadata import CoreMetadata
from proxy.file_responses import FileBody, cached_response, file_headers
from proxy.health import healthz, readyz
from proxy.model import DistFile, ProjectList, ProjectPage
from proxy.names import InvalidName, file_project_name, is_sha256, validate, validate_filename
from proxy.recent_uploads import RecentUploads
from proxy.replies import error
from proxy.request_id import RequestId
from proxy.serialize import CONTENT_TYPES, Rendered, negotiate, render
from proxy.sources.base import FileNotFoundUpstream, Source
from proxy.sources.compose import FailClosed, Index, NotFound, Unavailable
from proxy.sources.gitlab import GitLabSource
from proxy.sources.simple_index import SimpleIndexSource
from proxy.status_page import status_page
from proxy.upload import upload
from proxy.upstream_size import upstream_size

log = logging.getLogger("proxy.app")


@dataclass
class Services:
    config: Config
    client: httpx2.AsyncClient
    pages: PageCache
    files: FileStore
    index: Index
    auth: Authenticator
    metadata: CoreMetadata
    uploads: RecentUploads
    budget: Budget
    details: DetailsStore

    @classmethod
    def start(cls, config: Config, *, patient: bool = False) -> "Services":
        """`patient`: GitLab requests wait for the budget instead of failing (prefetch)."""
        client = upstream.make_client(config.gitlab.timeout)
        directory = config.cache.directory
        pages = PageCache(
            directory,
            config.cache.index_ttl,
            offline=config.cache.offline,
            negative_ttl=config.cache.negative_ttl,
        )
        budget = Budget(
            config.gitlab.max_requests_per_minute, directory / "gitlab-budget", patient=patient
        )
        details = DetailsStore(directory)
        gitlab = [
            GitLabSource(
                s, config.gitlab, client, budget=budget, details=details, changed=pages.invalidate
            )
            for s in config.sources
            if s.is_gitlab
        ]
        sources: list[Source] = list(gitlab)
        public: list[Source] = [
            SimpleIndexSource(s, client) for s in config.sources if not s.is_gitlab
        ]
        files = FileStore(config.cache.directory, config.cache.max_size)
        auth = Authenticator(
            config.auth,
            config.users,
            frozenset(s.name for s in config.sources if s.kind == "gitlab_project"),
            {s.name: s.readable_with for s in gitlab},
            frozenset(s.name for s in public),
        )
        index = Index(sources, public, pages)
        metadata = CoreMetadata(MetadataStore(config.cache.directory), files, pages, index, client)
        uploads = RecentUploads(config.cache.directory)
        health.share_in(runtime_dir.health_directory())
        metrics.forget_dead_workers()
        return cls(config, client, pages, files, index, auth, metadata, uploads, budget, details)

    def gitlab_sources(self) -> list[GitLabSource]:
        return [s for s in self.index.sources if isinstance(s, GitLabSource)]

    async def stop(self) -> None:
        self.auth.close()
        await self.metadata.close()
        await self.index.close()
        for source in self.gitlab_sources():
            await source.details.close()
        await self.client.aclose()
        self.pages.close()
        self.files.close()
        self.uploads.close()
        self.details.close()
        self.budget.close()


def upstream_error(exc: Unavailable | Offline) -> Response:
    if isinstance(exc, Unavailable) and exc.retry_after is not None:  # a rate limit: not now
        return error(503, str(exc), {"retry-after": str(math.ceil(exc.retry_after))})
    if isinstance(exc, Offline | FailClosed):
        return error(503, str(exc))
    return error(504 if exc.timeout else 502, str(exc))


def services(request: Request) -> Services:
    return request.app.state.services


def allowed_sources(request: Request) -> frozenset[str] | None:
    """The source names this request may read; None means every source."""
    return identity_of(request.scope).readable


def redirect(location: str) -> Response:
    # Relative, so it stays right behind any host name or path prefix.
    return Response(status_code=301, headers={"location": location})


def page_response(request: Request, page: Rendered, stale: bool) -> Response:
    headers = {"vary": "Accept, Accept-Encoding", "etag": page.etag}
    headers["x-cache"] = "STALE" if stale else "OK"
    if stale:
        headers["warning"] = '110 gitlab-pypi-proxy "Response is Stale"'
    if request.headers.get("if-none-match") == page.etag:
        return Response(status_code=304, headers=headers)
    body = page.body
    if page.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = page.gzipped
        headers["content-encoding"] = "gzip"
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        body = b""
    return Response(body, headers=headers, media_type=CONTENT_TYPES[page.media])


async def index_response(
    request: Request,
    what: str,
    load: Callable[[frozenset[str] | None], Awaitable[ProjectPage | ProjectList]],
) -> Response:
    """A simple-index page: from this worker's memo while fresh, else loaded and rendered."""
    media = negotiate(request.headers.get("accept"), request.query_params.get("format"))
    if media is None:
        return error(406, "no acceptable media type: ask for PEP 691 JSON or HTML")
    pages = services(request).pages
    allowed = allowed_sources(request)
    key = (what, media, allowed)
    generation = pages.generation()  # read before the inputs, so a racing invalidation wins
    rendered = pages.memo_get(key, generation)
    if rendered is not None:
        metrics.PAGE_HIT.inc()
        return page_response(request, rendered, stale=False)
    try:
        answer = await load(allowed)
    except NotFound:
        return error(404, f"no source has a project named {what}")
    except (Unavailable, Offline) as exc:
        return upstream_error(exc)
    rendered = await asyncio.to_thread(render, answer, media)
    if not answer.stale:
        pages.memo_put(key, rendered, answer.fresh_until, generation)
    return page_response(request, rendered, answer.stale)


async def simple_root(request: Request) -> Response:
    return await index_response(request, "/", services(request).index.project_list)


async def project_page(request: Request) -> Response:
    raw = request.path_params["name"]
    try:
        name = validate(raw)
    except InvalidName as exc:
        return error(400, str(exc))
    if raw != name or not request.url.path.endswith("/"):
        prefix = "../" if request.url.path.endswith("/") else ""
        return redirect(f"{prefix}{name}/")
    svc = services(request)
    return await index_response(
        request,
        name,
        lambda allowed: svc.metadata.annotated(svc.index.project_page(name, allowed)),
    )


async def distribution_file(request: Request) -> ASGIApp | Response:
    sha256, filename = request.path_params["sha256"], request.path_params["filename"]
    if not is_sha256(sha256):
        return error(400, "the file URL must hold a lowercase hex sha256")
    try:
        validate_filename(filename)
    except InvalidName as exc:
        return error(400, str(exc))
    svc = services(request)
    allowed = allowed_sources(request)
    wheel = filename.removesuffix(".metadata")
    # Every byte derived from a file (the file, its sidecar) passes the file's read check, first:
    # the answer to a reader who may not read it does not depend on what is cached.
    if not await may_read_file(svc.index, svc.pages, sha256, wheel, allowed):
        return error(404, f"no readable source offers {filename}")
    if wheel != filename:
        return await core_metadata_file(request, sha256, wheel)
    cached = await svc.files.open(sha256)
    if cached is not None:
        metrics.FILE_HIT.inc()
        return cached_response(cached, sha256, request.headers, request.method)
    if svc.config.cache.offline:
        return error(503, f"the proxy is offline and has no cached copy of {filename}")
    candidates = await svc.index.locate(sha256, filename, allowed)
    if not candidates:
        return error(404, f"no readable source offers {filename}")
    metrics.FILE_MISS.inc()
    if request.method == "HEAD":
        return await uncached_head(request, sha256, filename, candidates)
    if not svc.files.keeping:
        return await unkept_file(request, sha256, filename, candidates)
    download = svc.files.download(sha256, lambda: svc.index.open_first(candidates))
    try:
        await asyncio.shield(download.started)
    except CacheUnwritable:
        return await unkept_file(request, sha256, filename, candidates)
    except Exception as exc:
        return fetch_error(exc, sha256, filename)
    svc.metadata.after_download(download, sha256, filename)
    headers = file_headers(sha256, download.size, None, "MISS")
    return FileBody(200, headers, download.follow(), label=filename)


async def uncached_head(
    request: Request, sha256: str, filename: str, candidates: list[DistFile]
) -> Response | FileBody:
    """HEAD on a file not cached: its size as listed or as the upstream says, never a download."""
    svc = services(request)
    candidates = await _with_known_sizes(svc, sha256, filename, candidates)
    try:
        size = await upstream_size(svc.client, svc.index, candidates)
    except Exception as exc:
        return fetch_error(exc, sha256, filename)
    return FileBody(200, file_headers(sha256, size, None, "MISS"), None, label=filename)


async def _with_known_sizes(
    svc: Services, sha256: str, filename: str, candidates: list[DistFile]
) -> list[DistFile]:
    """The candidates with the exact size GitLab's `package_files` gave for them, where the page
    they were remembered from did not list it yet (details arrive in the background)."""
    project = file_project_name(filename)
    if project is None or any(f.size is not None for f in candidates):
        return candidates
    sized = []
    for file in candidates:
        known = (await svc.details.read(file.source, project)).files.get((filename, sha256))
        sized.append(replace(file, size=known[0]) if known else file)
    return sized


def fetch_error(exc: Exception, sha256: str, filename: str) -> Response:
    if isinstance(exc, FileNotFoundUpstream):
        return error(404, f"no source has {filename} with sha256 {sha256}")
    if isinstance(exc, Unavailable):
        return upstream_error(exc)
    log.error("download of %s failed: %s", filename, exc)
    return error(502, f"upstream download of {filename} failed")


async def unkept_file(
    request: Request, sha256: str, filename: str, candidates: list[DistFile]
) -> Response | FileBody:
    """The cache cannot take files now: stream from upstream, verified, without keeping."""
    stack = AsyncExitStack()
    try:
        stream = await stack.enter_async_context(services(request).index.open_first(candidates))
    except Exception as exc:
        return fetch_error(exc, sha256, filename)
    headers = file_headers(sha256, stream.size, None, "BYPASS")

    async def body() -> AsyncIterator[bytes]:
        async with stack:
            async for chunk in verified(stream.chunks, sha256):
                yield chunk

    return FileBody(200, headers, body(), label=filename)


async def core_metadata_file(request: Request, sha256: str, filename: str) -> Response:
    """PEP 658: `<file>.metadata`, the METADATA of the wheel with that digest."""
    svc = services(request)
    body = await svc.metadata.sidecar(sha256, filename, allowed_sources(request))
    if body is None:
        return error(404, f"no core metadata for {filename}")
    headers = {"etag": f'"{sha256}-metadata"', "cache-control": "public, max-age=31536000"}
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        body = b""
    return Response(body, headers=headers, media_type="application/octet-stream")


async def redirect_root(request: Request) -> Response:
    return redirect("simple/")


def create_app(config: Config) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = Services.start(config)
        try:
            yield
        finally:
            await app.state.services.stop()

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/simple", redirect_root, methods=["GET", "HEAD"]),
        Route("/simple/", simple_root, methods=["GET", "HEAD"]),
        Route("/simple/{name}/", project_page, methods=["GET", "HEAD"]),
        Route("/simple/{name}", project_page, methods=["GET", "HEAD"]),
        Route("/files/{sha256}/{filename}", distribution_file, methods=["GET", "HEAD"]),
        Route("/", status_page, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics.metrics_endpoint, methods=["GET"]),
    ]
    # twine aborts on any redirect: every spelling of the upload URL is answered in place.
    for path in ("/upload", "/upload/", "/upload/{source}", "/upload/{source}/"):
        routes.append(Route(path, upload, methods=["POST", "PUT"]))
    server = config.server
    # Outermost first: the real client and path, then the log (it sees 401s too), then access.
    middleware = [Middleware(AccessLog), Middleware(AccessControl)]
    if server.trusted_proxies or server.base_path:
        middleware.insert(0, Middleware(BehindProxy, server.trusted_proxies, server.base_path))
    middleware.insert(0, Middleware(RequestId))  # outermost: every answer carries its id
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.router.redirect_slashes = False
    return app
