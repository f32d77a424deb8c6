"""HTTP routes: parse the request, ask the index or the caches, render. Nothing else lives here."""

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import THREADS, TaskSet, off_loop
from gitlab_pypi_proxy.allocator import Trimmer
from gitlab_pypi_proxy.config import Config
from gitlab_pypi_proxy.descriptors import WATCH as DESCRIPTORS
from gitlab_pypi_proxy.errors import (
    BadRequest,
    FileNotFoundUpstream,
    Forbidden,
    NotAcceptable,
    NotAsListed,
    NotFound,
    Offline,
    ProxyError,
    Unavailable,
    UpstreamFailed,
)
from gitlab_pypi_proxy.http import audit_lines, error_responses, operator
from gitlab_pypi_proxy.http.access import AccessControl, identity_of
from gitlab_pypi_proxy.http.access_log import AccessLog
from gitlab_pypi_proxy.http.behind_proxy import BehindProxy
from gitlab_pypi_proxy.http.file_responses import (
    FileBody,
    accel_response,
    cached_response,
    exactly,
    file_headers,
    not_modified,
    parse_range,
    partial_headers,
    requested_range,
    unsatisfiable,
)
from gitlab_pypi_proxy.http.health import healthz, readyz
from gitlab_pypi_proxy.http.json_api import Readers, document, memo_what
from gitlab_pypi_proxy.http.memo_hits import MemoHits, page_answer
from gitlab_pypi_proxy.http.metrics_endpoint import metrics_endpoint
from gitlab_pypi_proxy.http.page_memo import PageMemo, memo_key
from gitlab_pypi_proxy.http.serialize import JSON_API, Rendered, negotiate, render
from gitlab_pypi_proxy.http.status_page import status_page
from gitlab_pypi_proxy.http.upload import upload, upload_help
from gitlab_pypi_proxy.index.index_protocol import Index
from gitlab_pypi_proxy.index.views import View
from gitlab_pypi_proxy.model import DistFile, ProjectList, ProjectPage
from gitlab_pypi_proxy.names import is_sha256, validate, validate_filename
from gitlab_pypi_proxy.policy.osv import OsvError
from gitlab_pypi_proxy.printable import header_value
from gitlab_pypi_proxy.redact import mask_userinfo
from gitlab_pypi_proxy.services import Services
from gitlab_pypi_proxy.storage.blobs import CacheUnwritable
from gitlab_pypi_proxy.storage.downloads import Download, verified

log = logging.getLogger("proxy.app")
SWITCH_INTERVAL = 0.001  # seconds; the interpreter's default is 0.005


def services(request: Request) -> Services:
    return request.app.state.services


def view_of(request: Request) -> View | None:
    """The view the request's path is under (`/<view>/simple/...`), or None at the root."""
    name = request.path_params.get("view")
    if name is None:
        return None
    view = services(request).composed.views.get(name)
    if view is None:
        raise NotFound(f"no view named {name}")
    return view


def index_of(request: Request) -> Index:
    """The index the request's path reads: a view's, or the one over every source."""
    view = view_of(request)
    return services(request).composed.index if view is None else view.index


def allowed_sources(request: Request) -> frozenset[str] | None:
    """The source names this request may read; None means every source. Under a view, those of
    the view the reader may read (raises Forbidden when that is none)."""
    identity = identity_of(request.scope)
    view = view_of(request)
    if view is None:
        return identity.readable
    allowed = view.readable(identity.readable)
    if not allowed:
        who = f"user {identity.user}" if identity.user else "these credentials"
        raise Forbidden(f"{who} may not read any source of view {view.name}")
    return allowed


def redirect(location: str) -> Response:
    # Relative, so it stays right behind any host name or path prefix.
    return Response(status_code=301, headers={"location": location})


def redirect_to_store(url: str) -> Response:
    """A download answered by the blob store itself: a presigned URL, for this reader only and
    for a few minutes (never kept by a shared cache)."""
    headers = {"location": url, "cache-control": "private, no-store", "x-cache": "REDIRECT"}
    return Response(status_code=307, headers=headers)


def page_response(request: Request, page: Rendered, stale: bool) -> Response:
    headers = request.headers
    status, raw, body = page_answer(
        page, stale, request.method, headers.get("if-none-match"), headers.get("accept-encoding")
    )
    response = Response(body, status_code=status)
    response.raw_headers = (
        raw  # as built, the same bytes a memo hit gets (gitlab_pypi_proxy.http.memo_hits)
    )
    return response


async def index_response(
    request: Request,
    what: str,
    load: Callable[[frozenset[str] | None], Awaitable[ProjectPage | ProjectList]],
) -> Response:
    """A simple-index page: from this worker's memo while fresh, else loaded and rendered."""
    media = negotiate(request.headers.get("accept"), request.query_params.get("format"))
    if media is None:
        raise NotAcceptable("no acceptable media type: ask for PEP 691 JSON or HTML")
    memo: PageMemo = request.app.state.memo
    allowed = allowed_sources(request)
    view = view_of(request)
    key = memo_key(what, media, allowed, view.name if view else "")
    generation = memo.generation(what)  # read before the inputs, so a racing change wins
    found = await memo.find(key, generation)
    if found is not None:  # no page cache lookup: not counted in its hit ratio
        rendered, current = found
        if not current:  # right, but its project's wheels gained metadata since
            memo.refresh(key, lambda: _rendered_again(load, allowed, media), generation)
        return page_response(request, rendered, stale=False)
    services(request).name_poll.asked()
    answer = await load(allowed)  # raises NotFound, Unavailable, Offline
    rendered = await _rendered(answer, media)
    if not answer.stale:
        memo.put(key, rendered, answer.fresh_until, generation)
    return page_response(request, rendered, answer.stale)


async def _rendered(answer: ProjectPage | ProjectList, media: str) -> Rendered:
    """`answer` rendered as `media`; a big one in a thread (gitlab_pypi_proxy.aio.off_loop)."""
    size = len(answer.files) if isinstance(answer, ProjectPage) else len(answer.names)
    return await off_loop(size, render, answer, media)


async def _rendered_again(
    load: Callable[[frozenset[str] | None], Awaitable[ProjectPage | ProjectList]],
    allowed: frozenset[str] | None,
    media: str,
) -> tuple[Rendered, float] | None:
    """A page rendered again in the background, and until when it is fresh; None when its
    index cannot answer it fresh now (the one served stays until it expires)."""
    try:
        answer = await load(allowed)
    except (NotFound, Unavailable, Offline):
        return None
    if answer.stale:
        return None
    return await _rendered(answer, media), answer.fresh_until


async def simple_root(request: Request) -> Response:
    return await index_response(request, "/", index_of(request).project_list)


async def project_page(request: Request) -> Response:
    raw = request.path_params["name"]
    name = validate(raw)
    if raw != name or not request.url.path.endswith("/"):
        prefix = "../" if request.url.path.endswith("/") else ""
        return redirect(f"{prefix}{name}/")
    index = index_of(request)
    return await index_response(request, name, lambda allowed: index.project_page(name, allowed))


async def json_api(request: Request) -> Response:
    """The PyPI JSON API: `/pypi/<name>/json` and `/pypi/<name>/<version>/json`, answered in
    place for any spelling of the name (Dependabot asks with the requirement's own)."""
    name = validate(request.path_params["name"])
    version: str | None = request.path_params.get("version")
    svc = services(request)
    memo: PageMemo = request.app.state.memo
    allowed = allowed_sources(request)
    view, index = view_of(request), index_of(request)
    base = mask_userinfo(str(request.base_url))  # built from the client's Host header
    base += f"{view.name}/" if view else ""  # its files under the view, with its read check
    key = memo_key(memo_what(base, name, version), JSON_API, allowed, view.name if view else "")
    generation = memo.generation(name)  # read before the inputs, so a racing change wins
    found = await memo.find(key, generation)
    if found is not None and found[1]:
        return page_response(request, found[0], stale=False)
    page = await index.project_page(name, allowed)  # NotFound, Unavailable, Offline
    readers = Readers(index, svc.composed.metadata, svc.advisories)
    rendered = await document(readers, page, version, base, allowed)
    if not page.stale:
        memo.put(key, rendered, page.fresh_until, generation)
    return page_response(request, rendered, page.stale)


async def distribution_file(request: Request) -> ASGIApp | Response:
    sha256, filename = request.path_params["sha256"], request.path_params["filename"]
    if not is_sha256(sha256):
        raise BadRequest("the file URL must hold a lowercase hex sha256")
    validate_filename(filename)
    allowed = allowed_sources(request)
    # Every byte derived from a file (the file, its sidecars) passes the file's read check, first:
    # the answer to a reader who may not read it does not depend on what is cached.
    await index_of(request).check_file(sha256, filename, allowed)
    if filename.endswith(".metadata"):
        return await core_metadata_file(request, sha256, filename.removesuffix(".metadata"))
    if filename.endswith(".provenance"):
        return await provenance_file(request, sha256, filename.removesuffix(".provenance"))
    return await file_answer(request, sha256, filename)


async def file_answer(request: Request, sha256: str, filename: str) -> ASGIApp | Response:
    """The file's bytes: cached ones only if a source this reader may read delivered them
    (gitlab_pypi_proxy.storage.deliveries), else its own source delivers the file first; a
    download under way is followed only if it reads such a source. A byte range of a file not
    cached comes from such a download or that source, never downloaded whole when the source
    serves ranges (a cached file another source delivered is verified first, as for the whole)."""
    svc = services(request)
    files, allowed = svc.composed.files, allowed_sources(request)
    spec = requested_range(request.headers, sha256) if request.method == "GET" else None
    for _ in range(2):  # a download this reader may not follow ends: the cache once more
        if await files.delivered(sha256, allowed):
            hit = await cached_answer(request, sha256, filename, "hit")
            if hit is not None:
                return hit
        elif (size := await cached_size(request, sha256)) is not None:
            if svc.config.cache.offline:
                raise Offline(f"the proxy is offline and none of your sources delivered {filename}")
            candidates = await readable_candidates(request, sha256, filename)
            if request.method == "HEAD":  # what the reader's source says, not what is cached
                return await uncached_head(request, sha256, filename, candidates)
            try:
                source = await files.verify(sha256, filename, candidates, size)
            except Exception as exc:
                raise download_failed(exc, sha256, filename) from None
            hit = await cached_answer(request, sha256, filename, "verified", source)
            if hit is not None:
                return hit
        if spec is not None:  # not cached
            partial = await range_answer(request, sha256, filename, spec)
            if partial is not None:
                return partial
            spec = None  # not one range the proxy can serve: the whole file
        answer = await download_answer(request, sha256, filename)
        if answer is not None:
            return answer
    # each time another reader's download, of a source this one may not read: its own, unkept
    return await unkept_file(
        request, sha256, filename, await readable_candidates(request, sha256, filename)
    )


async def cached_answer(
    request: Request, sha256: str, filename: str, outcome: str, source: str | None = None
) -> Response | FileBody | None:
    """The cached file (a presigned redirect to it, or its bytes), or None if not cached. Only
    once the reader may have the cached bytes."""
    svc = services(request)
    if svc.config.storage.redirect and request.method == "GET":
        url = await svc.stores.blobs.redirect_url(sha256)
        if url is not None:
            metrics.FILE_HIT.inc()
            await audit_lines.served(request, sha256, filename, "redirect", source)
            return redirect_to_store(url)
    cached = await svc.stores.blobs.open(sha256)
    if cached is None:
        return None
    accel = svc.config.server.accel_redirect
    if accel and not not_modified(request.headers, sha256):
        path = await cached.local_path()  # its bytes hashed first, if not yet
        if path is None:  # corrupt: dropped, fetched again
            cached.close()
            return None
        metrics.FILE_HIT.inc()
        await audit_lines.served(request, sha256, filename, outcome, source)
        return accel_response(cached, accel + path)
    metrics.FILE_HIT.inc()
    await audit_lines.served(request, sha256, filename, outcome, source)
    return cached_response(cached, sha256, request.headers, request.method)


async def cached_size(request: Request, sha256: str) -> int | None:
    """The size of the cached file (None: not cached), looked up as the proxy's own read."""
    blob = await services(request).stores.blobs.open(sha256, count=False)
    if blob is None:
        return None
    blob.close()
    return blob.size


async def readable_candidates(request: Request, sha256: str, filename: str) -> list[DistFile]:
    """Where the sources this reader may read offer the file; raises NotFound when none does."""
    files = services(request).composed.files
    candidates = await files.locate(sha256, filename, allowed_sources(request))
    if not candidates:
        raise NotFound(f"no readable source offers {filename}")
    return candidates


async def download_answer(
    request: Request, sha256: str, filename: str
) -> Response | FileBody | None:
    """The file as it downloads (or from upstream unkept when the cache will not take it);
    None when the download under way reads a source this reader may not read, once it has
    ended, or found the file cached: whose bytes those are is for the delivery records."""
    svc = services(request)
    if svc.config.cache.offline:
        raise Offline(f"the proxy is offline and has no cached copy of {filename}")
    files, allowed = svc.composed.files, allowed_sources(request)
    candidates = await readable_candidates(request, sha256, filename)
    metrics.FILE_MISS.inc()
    if request.method == "HEAD":
        return await uncached_head(request, sha256, filename, candidates)
    if not svc.stores.blobs.keeping:
        return await unkept_file(request, sha256, filename, candidates)
    try:
        download = await svc.stores.downloads.started(sha256, files.opener(candidates))
    except CacheUnwritable:
        return await unkept_file(request, sha256, filename, candidates)
    except Exception as exc:
        raise download_failed(exc, sha256, filename) from None
    if download.source is None or (allowed is not None and download.source not in allowed):
        if download.source is not None:
            with contextlib.suppress(Exception):  # its own readers are told how it failed
                await download.wait()
        return None
    svc.composed.metadata.after_download(download, sha256, filename)
    await audit_lines.served(request, sha256, filename, "miss", download.source)
    headers = file_headers(sha256, download.size, None, "MISS")
    return FileBody(200, headers, download.follow(), label=filename)


async def uncached_head(
    request: Request, sha256: str, filename: str, candidates: list[DistFile]
) -> Response | FileBody:
    """HEAD on a file not cached: its size as listed or as the upstream says, and Accept-Ranges
    when its source serves ranges (uv then reads a wheel's metadata by ranges); never a
    download."""
    svc = services(request)
    try:
        head = await svc.composed.files.head(candidates)
    except Exception as exc:
        raise download_failed(exc, sha256, filename) from None
    headers = file_headers(sha256, head.size, None, "MISS")
    if head.ranges:
        headers["accept-ranges"] = "bytes"
    return FileBody(200, headers, None, label=filename)


def readable_download(download: Download | None, allowed: frozenset[str] | None) -> bool:
    """Has `download` started reading a source this reader may read?"""
    return (
        download is not None
        and download.started.done()
        and download.source is not None
        and (allowed is None or download.source in allowed)
    )


async def range_answer(request: Request, sha256: str, filename: str, spec: str) -> FileBody | None:
    """A byte range of a file this reader has no cached copy of: from a download under way of
    a source it may read once the range is written there, else that source's range, else (its
    upstream sends whole files) from the download of the whole file. None when `spec` is not
    one range the proxy serves or the file's size cannot be known: the whole file answers."""
    svc = services(request)
    if svc.config.cache.offline:
        raise Offline(f"the proxy is offline and has no cached copy of {filename}")
    files, allowed = svc.composed.files, allowed_sources(request)
    candidates = await readable_candidates(request, sha256, filename)
    download = svc.stores.downloads.under_way(sha256)
    if not readable_download(download, allowed):
        download = None
    size = download.size if download is not None else None
    try:
        size = size if size is not None else await files.known_size(candidates)
        size = size if size is not None else (await files.head(candidates)).size
    except Exception as exc:
        raise download_failed(exc, sha256, filename) from None
    if size is None:
        return None
    try:
        selected = parse_range(spec, size)
    except ValueError:
        return unsatisfiable(sha256, size, "MISS")
    if selected is None:
        return None
    metrics.FILE_MISS.inc()
    start, end = selected
    if download is not None and download.source is not None and end < download.readable:
        body, source = download.range(start, end), download.source
    else:
        found = await upstream_range(request, sha256, filename, candidates, (start, end), size)
        if found is None:
            return None
        body, source = found
    await audit_lines.served(request, sha256, filename, "range", source)
    headers = partial_headers(sha256, start, end, size, None, "MISS")
    return FileBody(206, headers, body, label=filename)


async def upstream_range(
    request: Request,
    sha256: str,
    filename: str,
    candidates: list[DistFile],
    selected: tuple[int, int],
    size: int,
) -> tuple[AsyncIterator[bytes], str] | None:
    """The range from the reader's first candidate that has the file, as the upstream sends it
    (unverified, as any range); when the upstream sends the whole file (or another range), the
    range from the download of the whole, kept. None when neither can be had."""
    svc = services(request)
    files, (start, end) = svc.composed.files, selected
    stack = AsyncExitStack()
    try:
        stream = await stack.enter_async_context(files.open_first(candidates, selected))
    except Exception as exc:
        await stack.aclose()
        raise download_failed(exc, sha256, filename) from None
    if stream.content_range == f"bytes {start}-{end}/{size}" and stream.source is not None:

        async def body() -> AsyncIterator[bytes]:
            async with stack:
                async for chunk in exactly(stream.chunks, end - start + 1):
                    yield chunk

        return body(), stream.source
    await stack.aclose()  # the whole file, unread: its download below serves the range
    if not svc.stores.blobs.keeping:
        return None
    try:
        download = await svc.stores.downloads.started(sha256, files.opener(candidates))
    except CacheUnwritable:
        return None
    except Exception as exc:
        raise download_failed(exc, sha256, filename) from None
    if not readable_download(download, allowed_sources(request)) or download.size != size:
        return None
    svc.composed.metadata.after_download(download, sha256, filename)
    return download.range(start, end), download.source or ""


def download_failed(exc: Exception, sha256: str, filename: str) -> ProxyError:
    """What the client is told when a file could not be had from upstream."""
    if isinstance(exc, FileNotFoundUpstream):
        return NotFound(f"no source has {filename} with sha256 {sha256}")
    if isinstance(exc, Unavailable | NotAsListed):
        return exc
    log.error("download of %s failed: %s", filename, exc)
    return UpstreamFailed(f"upstream download of {filename} failed")


async def unkept_file(
    request: Request, sha256: str, filename: str, candidates: list[DistFile]
) -> Response | FileBody:
    """The cache cannot take files now: stream from upstream, verified, without keeping."""
    stack = AsyncExitStack()
    try:
        opening = services(request).composed.files.open_first(candidates)
        stream = await stack.enter_async_context(opening)
    except Exception as exc:
        raise download_failed(exc, sha256, filename) from None
    headers = file_headers(sha256, stream.size, None, "BYPASS")
    await audit_lines.served(request, sha256, filename, "bypass", candidates[0].source)

    async def body() -> AsyncIterator[bytes]:
        async with stack:
            async for chunk in verified(stream.chunks, sha256):
                yield chunk

    return FileBody(200, headers, body(), label=filename)


async def core_metadata_file(request: Request, sha256: str, filename: str) -> Response:
    """PEP 658: `<file>.metadata`, the METADATA of the wheel with that digest."""
    svc = services(request)
    body = await svc.composed.metadata.sidecar(sha256, filename, allowed_sources(request))
    if body is None:
        raise NotFound(f"no core metadata for {filename}")
    headers = {"etag": f'"{sha256}-metadata"', "cache-control": "public, max-age=31536000"}
    if request.method == "HEAD":
        headers["content-length"] = str(len(body))
        body = b""
    return Response(body, headers=headers, media_type="application/octet-stream")


async def provenance_file(request: Request, sha256: str, filename: str) -> Response:
    """PEP 740: `<file>.provenance`, as the public index that listed the file serves it."""
    provenances = services(request).composed.provenances
    if provenances is None:
        raise NotFound(f"no provenance for {filename}")
    kept = await provenances.get(sha256, filename, allowed_sources(request))
    # the verification's words hold the publisher's names as the upstream gave them (and as
    # they were kept, before they were made one line)
    headers = {"etag": f'"{sha256}-provenance"', "x-provenance": header_value(kept.detail)}
    body = b"" if request.method == "HEAD" else kept.body
    if request.method == "HEAD":
        headers["content-length"] = str(len(kept.body))
    return Response(body, headers=headers, media_type="application/json")


async def redirect_root(request: Request) -> Response:
    return redirect("simple/")


async def start_guard(services: Services) -> None:
    """The advisories and the audit trail, or one line and the end of this worker: serving
    without them would lift the protection silently (uvicorn's supervisor keeps the workers it
    had when a replacement ends so; a Starlette lifespan error would log a traceback)."""
    try:
        await services.start_guard()
    except (OsvError, OSError) as exc:
        log.error("cannot start: %s", exc)
        logging.shutdown()
        os._exit(STARTUP_FAILURE)


@contextmanager
def reload_on_sighup(reload: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """SIGHUP to this worker reads the OSV export again (uvicorn's supervisor, with several
    workers, answers SIGHUP by replacing each worker, which reads it at start)."""
    loop = asyncio.get_running_loop()
    tasks = TaskSet(log, "reading the vulnerabilities again")
    loop.add_signal_handler(signal.SIGHUP, lambda: tasks.spawn(reload()))
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def _index_routes(prefix: str) -> list[Route]:
    """The index's routes under `prefix`: its simple pages, its files and its JSON API."""
    endpoints = (
        ("/simple", redirect_root),
        ("/simple/", simple_root),
        ("/simple/{name}/", project_page),
        ("/simple/{name}", project_page),
        ("/files/{sha256}/{filename}", distribution_file),
        ("/pypi/{name}/json", json_api),
        ("/pypi/{name}/{version}/json", json_api),
    )
    return [Route(prefix + path, endpoint, methods=["GET", "HEAD"]) for path, endpoint in endpoints]


def create_app(config: Config) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = services = Services.start(config)
        app.state.memo = PageMemo(
            services.stores.coordinator, services.stores.rendered_pages(), services.rendering
        )
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(THREADS, thread_name_prefix="blocking"))
        DESCRIPTORS.start(loop)
        trimming = TaskSet(log, "trimming the heap")
        trimming.spawn(Trimmer().run())  # what big pages cost, given back (allocator.py)
        try:
            await start_guard(services)
            services.warm()
            # What the worker holds now lives as long as it does: out of the collector's way,
            # a full collection while a big page is parsed scans that page, not the program.
            gc.collect()
            gc.freeze()
            # The event loop waits for the GIL behind threads parsing and rendering big pages:
            # each holds it for the switch interval when the loop asks, so a shorter one
            # answers the loop sooner (bench scenario 7: the loop blocked 8-32 ms at most at
            # 1 ms, 22-65 ms at 2 ms, 65-73 ms at 5 ms), for about a sixth of the rate of small
            # warm files downloaded at once (scenario 2: the switches cost the readers' threads).
            sys.setswitchinterval(SWITCH_INTERVAL)
            with reload_on_sighup(services.reload_advisories):
                yield
        finally:
            await trimming.close()
            await app.state.memo.close()
            DESCRIPTORS.stop()
            await app.state.services.stop()

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        *_index_routes(""),
        Route("/", status_page, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        # the operator API (gitlab_pypi_proxy.http.operator)
        Route("/-/refresh/{name}", operator.refresh, methods=["POST"]),
        Route("/-/files/{sha256}", operator.purge, methods=["DELETE"]),
        Route("/-/yank/{name}/{version}", operator.yank, methods=["PUT"]),
        Route("/-/yank/{name}/{version}", operator.unyank, methods=["DELETE"]),
        Route("/-/projects", operator.projects, methods=["GET"]),
    ]
    # twine aborts on any redirect: every spelling of the upload URL is answered in place.
    # /legacy/ is PyPI's; `/` is the index URL without /simple/ (GitLab, Nexus, Artifactory).
    for prefix in ("/upload", "/legacy"):
        for path in (prefix, f"{prefix}/", f"{prefix}/{{source}}", f"{prefix}/{{source}}/"):
            routes.append(Route(path, upload, methods=["POST", "PUT"]))
            routes.append(Route(path, upload_help, methods=["GET", "HEAD"]))
    routes.append(Route("/", upload, methods=["POST", "PUT"]))
    # [[views]]: the index over some sources, at /<view>/simple/, its files and its JSON API
    # under /<view>/ too (names the routes above take are refused as view names)
    routes += _index_routes("/{view}")
    server = config.server
    # Outermost first: the request's id and its log line (every answer carries the id, the log
    # sees 401s too), the real client and path, then access. Innermost, memo hits answered
    # before the router (the same answer the route gives).
    middleware = [
        Middleware(AccessLog),
        Middleware(AccessControl),
        Middleware(MemoHits, root=simple_root, page=project_page),
    ]
    if server.trusted_proxies or server.base_path:
        middleware.insert(1, Middleware(BehindProxy, server.trusted_proxies, server.base_path))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={ProxyError: error_responses.handle},
    )
    app.router.redirect_slashes = False
    return app
