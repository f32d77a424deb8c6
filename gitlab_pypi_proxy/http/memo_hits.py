"""The answer to a simple-index page request from this worker's page memo, and the plain ASGI
layer that gives it before Starlette's router: a memo hit (most of what pip and uv ask a warm
proxy) costs no routing, no Request or Response object and no thread hop.

`page_answer` builds the status, headers and body of a rendered page for both this layer and the
route (`gitlab_pypi_proxy.http.app.index_response`), and both look the page up with
`page_memo.memo_key`: the two cannot answer differently. Whatever this layer is unsure of (a query
string, a name not in its normal form, a page not in the memo, a media type nobody accepts) goes to
the route."""

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gitlab_pypi_proxy.http.access import identity_of
from gitlab_pypi_proxy.http.behind_proxy import route_path
from gitlab_pypi_proxy.http.page_memo import PageMemo, memo_key
from gitlab_pypi_proxy.http.serialize import CONTENT_TYPES, Rendered, negotiate
from gitlab_pypi_proxy.http.view_paths import split_view

Headers = list[tuple[bytes, bytes]]

_STALE = b'110 gitlab-pypi-proxy "Response is Stale"'
_VARY = (b"vary", b"Accept, Accept-Encoding")
_CONTENT_TYPES = {media: value.encode("latin-1") for media, value in CONTENT_TYPES.items()}


def page_answer(
    page: Rendered,
    stale: bool,
    method: str,
    if_none_match: str | None,
    accept_encoding: str | None,
) -> tuple[int, Headers, bytes]:
    """Status, headers and body of `page` for a GET or HEAD with these request headers."""
    headers = [_VARY, (b"etag", page.etag.encode("latin-1"))]
    headers.append((b"x-cache", b"STALE" if stale else b"OK"))
    if stale:
        headers.append((b"warning", _STALE))
    if if_none_match == page.etag:
        return 304, headers, b""
    if page.gzipped is not None and "gzip" in (accept_encoding or ""):
        body = page.gzipped
        headers.append((b"content-encoding", b"gzip"))
    else:
        body = page.body  # decompressed when the memo keeps the gzip copy alone
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    headers.append((b"content-type", _CONTENT_TYPES[page.media]))
    return 200, headers, b"" if method == "HEAD" else body


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lowercase), as Starlette's Request.headers gives it."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class MemoHits:
    """Answers memo hits of `/simple/` and `/simple/<normalized name>/` (GET, HEAD), at the root
    and under a view (`/<view>/simple/...`); everything else goes on to `app`. `root` and `page`
    are the routes it stands in for: the access log and the metrics name them as if they had
    answered."""

    def __init__(self, app: ASGIApp, root: Callable[..., Any], page: Callable[..., Any]) -> None:
        self.app, self.root, self.page = app, root, page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            answer = self.answer(scope)
            if answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def answer(self, scope: Scope) -> tuple[int, Headers, bytes] | None:
        if scope.get("query_string"):
            return None  # ?format=: the route parses it
        services = scope["app"].state.services  # made by create_app's lifespan
        view, path = split_view(route_path(scope), services.composed.views)
        if path == "/simple/":
            what, endpoint = "/", self.root
        elif path.startswith("/simple/") and path.endswith("/") and path.count("/") == 3:
            # Only a name the route validated and normalized is ever a key: any other spelling
            # misses here, and the route answers it (a redirect, a 400).
            what, endpoint = path[8:-1], self.page
        else:
            return None
        media = negotiate(_header(scope, b"accept"), None)
        if media is None:
            return None  # the route's 406
        memo: PageMemo = scope["app"].state.memo  # made by create_app's lifespan
        allowed = identity_of(scope).readable
        if view is not None:
            allowed = view.readable(allowed)
            if not allowed:
                return None  # the route's 403
        key = memo_key(what, media, allowed, view.name if view else "")
        rendered = memo.get(key, memo.generation(what))
        if rendered is None:
            return None
        scope["endpoint"] = endpoint  # for the access log and the metrics
        return page_answer(
            rendered,
            False,
            scope["method"],
            _header(scope, b"if-none-match"),
            _header(scope, b"accept-encoding"),
        )
