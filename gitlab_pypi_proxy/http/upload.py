"""Uploads (twine, uv publish, poetry, pdm): multipart in, spooled to disk, hashed, verified,
forwarded to the GitLab project with the caller's upstream credentials, the page invalidated.
A body over `[upload] max_size`, or whose fields other than the file pass FORM_FIELDS_LIMIT (they
are held in memory), is refused (413) as soon as that is known, spooling no more.
Once GitLab has answered, the answer is GitLab's: nothing the proxy does afterwards (a full or
read-only cache directory) turns a stored file into an error that a retry would meet with 409.

GitLab never hashes what it stores, so the proxy always sends the digests it computed itself.
Clients find the upload URL where other indexes keep it: /legacy/ (PyPI's), / (the index URL
without /simple/, as GitLab, Nexus and Artifactory take uploads) and /upload/; a GET there says
in plain words how to upload, since a person pasting the URL in a browser gets no form.
"""

import asyncio
import hashlib
import logging
from typing import BinaryIO

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.aio import long_work
from gitlab_pypi_proxy.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ProxyError,
    ShuttingDown,
    SourceUnavailable,
    TooLarge,
    Unauthorized,
    UploadRefused,
    UpstreamFailed,
)
from gitlab_pypi_proxy.http import audit_lines
from gitlab_pypi_proxy.http.access import identity_of
from gitlab_pypi_proxy.http.body_limit import (
    FORM_FIELDS_LIMIT,
    check_declared,
    form_fields_limited,
    limited,
)
from gitlab_pypi_proxy.names import normalize, validate, validate_filename
from gitlab_pypi_proxy.sources.base import UploadTarget
from gitlab_pypi_proxy.storage.uploads import Upload

log = logging.getLogger("proxy.upload")

_CHUNK = 1024 * 1024


def file_digests(file: BinaryIO) -> tuple[int, dict[str, str]]:
    """(size, {field name: hex digest}) of a file, read from the start in chunks."""
    hashes = {
        "sha256_digest": hashlib.sha256(),
        "md5_digest": hashlib.md5(usedforsecurity=False),
        "blake2_256_digest": hashlib.blake2b(digest_size=32),
    }
    file.seek(0)
    size = 0
    while chunk := file.read(_CHUNK):
        size += len(chunk)
        for h in hashes.values():
            h.update(chunk)
    return size, {k: h.hexdigest() for k, h in hashes.items()}


def _target(request: Request) -> tuple[str, UploadTarget]:
    services = request.app.state.services
    name = request.path_params.get("source") or services.config.upload.default_source
    if not name:
        raise NotFound("no upload target: use /upload/<source>/ or set [upload] default_source")
    target = services.upload_target(name)
    if target is None:
        raise NotFound(f"no gitlab_project source named {name!r} to upload to")
    identity = identity_of(request.scope)
    if name not in identity.uploadable:
        who = f"user {identity.user}" if identity.user else "these credentials"
        raise Forbidden(f"{who} may not upload to {name}")
    if identity.upstream is None:
        raise Forbidden(f"user {identity.user} has no gitlab_token to upload with")
    return name, target


async def upload_help(request: Request) -> Response:
    """What a GET on an upload URL is told: where to POST, with which credentials."""
    base = str(request.base_url)  # built from the client's Host header, under base_path
    default = request.app.state.services.config.upload.default_source
    where = (
        "Files go to the proxy's default GitLab project; to choose another, upload to"
        if default
        else "No default GitLab project is set: upload to"
    )
    text = (
        "This is the upload URL of gitlab-pypi-proxy. Upload with POST, as twine, uv publish,\n"
        "poetry publish and pdm publish do; a browser has nothing to see here.\n\n"
        f"  twine upload --repository-url {base}legacy/ dist/*\n"
        f"  uv publish --publish-url {base}legacy/ dist/*\n\n"
        f"{where} {base}legacy/<source>/,\nnaming a source of this proxy.\n"
        f"{base}upload/ and {base} itself take uploads too.\n\n"
        "Credentials: HTTP basic auth with the name and password of a proxy user who may\n"
        "upload there (the proxy uploads to GitLab with that user's GitLab token), or, where\n"
        "the proxy passes credentials through, a GitLab token (user __token__, or\n"
        "gitlab-ci-token with a CI job token).\n\n"
        f"Install from {base}simple/.\n"
    )
    return PlainTextResponse(text)


async def upload(request: Request) -> Response:
    name, target = _target(request)
    limit = request.app.state.services.config.upload.max_size
    try:
        check_declared(request.headers, limit)
        # starlette closes (and so deletes) the spooled files when reading fails
        receive = limited(request.receive, limit)
        content_type = request.headers.get("content-type")
        request = Request(
            request.scope, form_fields_limited(receive, content_type, FORM_FIELDS_LIMIT)
        )
        async with request.form(
            max_files=1, max_fields=200, max_part_size=FORM_FIELDS_LIMIT
        ) as form:
            return await _forward(request, name, target, form)
    except TooLarge as exc:
        log.info("upload to %s refused: %s", name, exc)
        raise
    except MultiPartException as exc:
        raise BadRequest(f"not a valid upload form: {exc}") from None
    except ClientDisconnect:
        log.info("upload to %s: the client hung up before the end of the form", name)
        raise BadRequest("the upload ended before the end of its form") from None
    except asyncio.CancelledError:
        # uvicorn cancels what still runs when [server] graceful_shutdown has passed after a
        # SIGTERM: answer (the task ends right after) instead of its 500 and traceback.
        log.warning("upload to %s cut by the shutdown: answered 503", name)
        raise ShuttingDown(
            "the proxy is shutting down before this upload finished: retry it"
        ) from None


def form_problem(form: FormData, filename: str) -> str | None:
    """Why GitLab would store this upload wrongly, or None: another action than a file upload,
    a file that is no wheel or sdist, or a name or version other than its file name's.
    The name is a valid project name already."""
    action = form.get(":action")
    if action is not None and action != "file_upload":
        return f"only ':action=file_upload' is supported, not {str(action)[:40]!r}"
    try:
        if filename.endswith(".whl"):
            project, version = parse_wheel_filename(filename)[:2]
        else:
            project, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return f"{filename} is not a wheel (.whl) or sdist (.tar.gz, .zip) file name"
    sent_name, sent_version = str(form.get("name")), str(form.get("version") or "")
    if normalize(sent_name) != project:
        return f"{filename} is a file of {project}, not of {sent_name}"
    try:
        if Version(sent_version) != version:
            return f"{filename} is version {version}, not {sent_version[:40]}"
    except InvalidVersion:
        return f"not a valid version: {sent_version[:40]!r}"
    return None


async def _forward(request: Request, source: str, target: UploadTarget, form: FormData) -> Response:
    content = form.get("content")
    if not isinstance(content, UploadFile) or not content.filename:
        raise BadRequest("the upload form has no file in its 'content' field")
    filename = validate_filename(content.filename)
    name = validate(str(form.get("name") or ""))
    if not form.get("version"):
        raise BadRequest("the upload form has no 'version'")
    problem = form_problem(form, filename)
    if problem is not None:
        raise BadRequest(problem)
    size, digests = await long_work(file_digests, content.file)
    for field, digest in digests.items():
        sent = form.get(field)
        if isinstance(sent, str) and sent and sent.strip().lower() != digest:
            raise BadRequest(f"{field} does not match the content of {filename}")
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    fields |= digests
    identity = identity_of(request.scope)
    try:
        answer = await target.upload(fields, filename, content.file, size, identity.upstream)
    except SourceUnavailable as exc:
        metrics.UPLOADS.labels(source, "timeout" if exc.timeout else "error").inc()
        raise UpstreamFailed(f"upload of {filename} failed: {exc}", timeout=exc.timeout) from None
    metrics.UPLOADS.labels(source, str(answer.status)).inc()
    if 200 <= answer.status < 300:
        log.info("uploaded %s (%d bytes) to %s", filename, size, source)
        audit_lines.uploaded(request, digests["sha256_digest"], filename, source)
        who = identity.user or ("passthrough" if identity.passthrough else "-")
        try:
            await _invalidate(request, name)
            await request.app.state.services.uploads.record(Upload(filename, source, who))
        except Exception as exc:  # GitLab has the file: a retry would only get a 409
            log.warning(
                "uploaded %s, but its page or the upload list was not updated: %r", filename, exc
            )
        return PlainTextResponse(f"uploaded {filename} to {source}\n", status_code=answer.status)
    raise _refusal(answer.status, answer.message, filename, source, request)


def _detail(status: int, message: str) -> str:
    """`HTTP 400: Bad request - ...`: GitLab's message without the status it starts with."""
    text = message.removeprefix(f"{status} ").strip()
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def _refusal(status: int, message: str, filename: str, source: str, request: Request) -> ProxyError:
    """What the client is told when GitLab answered the upload with `status`, not a 2xx."""
    detail = _detail(status, message)
    log.info("GitLab refused %s for %s: %s", filename, source, detail)
    if status == 400 and "has already been taken" in message:
        return Conflict(f"File already exists: {filename}")
    if status == 401:
        # Passthrough credentials are the client's own: let it ask for others.
        realm = request.app.state.services.config.auth.realm
        return Unauthorized(
            f"GitLab refused the credentials for {source}: {detail}",
            realm if identity_of(request.scope).passthrough else None,
        )
    if status in (400, 403, 404, 413):
        return UploadRefused(status, f"GitLab refused {filename} for {source}: {detail}")
    return UpstreamFailed(f"upstream {source} answered the upload with HTTP {status}")


async def _invalidate(request: Request, name: str) -> None:
    """Read-your-writes: the next page of `name` through any source is asked for afresh."""
    await request.app.state.services.uploaded(normalize(name))
