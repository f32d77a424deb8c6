"""The ceiling of the warm page path on this stack: the same page body served by a bare ASGI
callable and by one Starlette route, under uvicorn with the proxy's worker count. What the proxy
loses against these is its own; what these lose against nginx is the server stack's."""

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from bench import dataset

_PAGE = Path(__file__).resolve().parent / "results" / "data" / "simple"
BODY = (_PAGE / dataset.package_name(dataset.PACKAGES - 1) / "index.html").read_bytes()
_HEADERS = [(b"content-type", b"text/html"), (b"content-length", str(len(BODY)).encode())]


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def _page(request: Any) -> Response:
    return Response(BODY, media_type="text/html")


starlette = Starlette(routes=[Route("/simple/{name}/", _page)])
