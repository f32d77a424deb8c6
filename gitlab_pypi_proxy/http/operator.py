"""The operator API: JSON over HTTP under `/-/`, for the users named in `[auth] admins`.

- `POST /-/refresh/<name>`: every source asked for the name now, everywhere; also open to any
  identity that may upload (a CI job publishing straight to GitLab), told only what the sources
  it may read said.
- `DELETE /-/files/<sha256>`: the cached file and its sidecars dropped everywhere; 204.
- `PUT` / `DELETE /-/yank/<name>/<version>`: a yank (with `{"reason": ...}`) every worker and
  replica lists from then on, kept across restarts, or taken back; 204.
- `GET /-/projects`: the cached projects, built and rendered in a thread.

Anyone else gets a 403 whose one line says who may. Each action is logged and written to the
audit trail with who did it (gitlab_pypi_proxy.http.audit_lines)."""

import asyncio
import json
import re
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gitlab_pypi_proxy.auth import Identity
from gitlab_pypi_proxy.errors import BadRequest, Conflict, Forbidden, TooLarge, UpstreamFailed
from gitlab_pypi_proxy.http import audit_lines
from gitlab_pypi_proxy.http.access import identity_of
from gitlab_pypi_proxy.names import is_sha256, validate
from gitlab_pypi_proxy.services import Services
from gitlab_pypi_proxy.storage import shared_json
from gitlab_pypi_proxy.storage.cached_projects import CachedProject, cached_projects

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,127}")  # PEP 440 and legacy spellings
MAX_BODY = 64 * 2**10
MAX_REASON = 500  # a yank reason is printed by resolvers: one line


def _services(request: Request) -> Services:
    return request.app.state.services


def _who(identity: Identity) -> str:
    return f"user {identity.user}" if identity.user else "these credentials"


def _admin(request: Request, what: str) -> Identity:
    """The caller, if it is one of `[auth] admins`; else Forbidden saying who may `what`."""
    identity = identity_of(request.scope)
    if identity.user is None or identity.user not in _services(request).config.auth.admins:
        raise Forbidden(f"{_who(identity)} may not {what}: only the users in [auth] admins may")
    return identity


def _may_refresh(request: Request, name: str) -> Identity:
    """An admin, or an identity that may upload to a source."""
    identity = identity_of(request.scope)
    services = _services(request)
    if identity.user is not None and identity.user in services.config.auth.admins:
        return identity
    if identity.uploadable or (identity.passthrough and services.auth.upload_targets):
        return identity
    raise Forbidden(
        f"{_who(identity)} may not refresh {name}: only the users in [auth] admins and those "
        "who may upload to a source may"
    )


def _timestamp(moment: float) -> str | None:
    if not moment:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(request: Request) -> str:
    return validate(request.path_params["name"])


def _version(request: Request) -> str:
    version = request.path_params["version"]
    if not _VERSION.fullmatch(version):
        raise BadRequest(f"not a version: {version[:80]!r}")
    return version


async def refresh(request: Request) -> Response:
    name = _name(request)
    identity = _may_refresh(request, name)
    services = _services(request)
    if services.config.cache.offline:
        raise Conflict("the proxy is offline ([cache] offline = true): it asks no source")
    said = await services.refresh(name)
    readable = identity.readable
    shown = [s for s in said if readable is None or s.source in readable]
    outcomes = tuple(f"{s.source}: {s.outcome}" for s in shown)
    audit_lines.operated(request, "refresh", project=name, notes=outcomes)
    return JSONResponse({"project": name, "sources": [s.as_json() for s in shown]})


async def purge(request: Request) -> Response:
    sha256 = request.path_params["sha256"]
    if not is_sha256(sha256):
        raise BadRequest("the file URL must hold a lowercase hex sha256")
    _admin(request, "purge files")
    services = _services(request)
    listed = await services.stores.locations.of(sha256)
    filename = listed[0].filename if listed else ""
    try:
        held = await services.purge.purge(sha256)
    except Exception as exc:  # the bucket's errors, or the disk's
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UpstreamFailed(f"the file store could not delete {sha256}: {reason}") from None
    note = "was cached here" if held else "was not cached here"
    audit_lines.operated(request, "purge", filename=filename, sha256=sha256, notes=(note,))
    return Response(status_code=204)


async def _reason(request: Request) -> str:
    """The `reason` of the request's JSON body (bounded, one line of printable text)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TooLarge(f"a yank's body is at most {MAX_BODY} bytes")
    try:
        document = json.loads(body) if body.strip() else {}
    except ValueError:
        raise BadRequest('the body must be JSON: {"reason": "..."}') from None
    reason = document.get("reason", "") if isinstance(document, dict) else None
    if not isinstance(reason, str):
        raise BadRequest('the body must be JSON: {"reason": "..."}')
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise BadRequest(f"the reason must be one line of at most {MAX_REASON} characters")
    return reason.strip()


async def yank(request: Request) -> Response:
    name, version = _name(request), _version(request)
    identity = _admin(request, "yank releases")
    reason = await _reason(request)
    try:
        await _services(request).composed.yanks.yank(name, version, reason, identity.user or "")
    except shared_json.TooLarge as exc:
        raise Conflict(f"not yanked: {exc}; take some yanks back first") from None
    audit_lines.operated(request, "yank", project=name, version=version, notes=(reason,))
    return Response(status_code=204)


async def unyank(request: Request) -> Response:
    name, version = _name(request), _version(request)
    _admin(request, "take yanks back")
    found = await _services(request).composed.yanks.unyank(name, version)
    note = "was yanked" if found else "was not yanked through the API"
    audit_lines.operated(request, "unyank", project=name, version=version, notes=(note,))
    return Response(status_code=204)


def _project(project: CachedProject) -> dict[str, object]:
    return {
        "name": project.name,
        "versions": sorted(project.versions),
        "files": project.files,
        "bytes": project.bytes,
        "last_use": _timestamp(project.last_use),
    }


def _listing(services: Services) -> tuple[int, bytes]:
    """How many projects, and the JSON answer (blocking: reads every blob's entry)."""
    named, unnamed = cached_projects(services.stores.blobs, services.stores.locations)
    body = {
        "projects": [_project(p) for p in named],
        "unnamed": {"files": unnamed.files, "bytes": unnamed.bytes},
    }
    return len(named), json.dumps(body, separators=(",", ":")).encode()


async def projects(request: Request) -> Response:
    _admin(request, "list the cached projects")
    count, body = await asyncio.to_thread(_listing, _services(request))
    audit_lines.operated(request, "projects", notes=(f"{count} projects listed",))
    return Response(body, media_type="application/json")
