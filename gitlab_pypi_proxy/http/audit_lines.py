"""The audit trail's lines from the routes: who received or uploaded which file, from where,
with what cache outcome and which advisories, and what operators did through the operator API
(gitlab_pypi_proxy.policy.audit_trail writes them)."""

import logging
from typing import Literal

from starlette.requests import Request

from gitlab_pypi_proxy.auth import basic_credentials
from gitlab_pypi_proxy.http.access import identity_of
from gitlab_pypi_proxy.names import file_project_name, file_version
from gitlab_pypi_proxy.policy.audit_trail import AuditEntry, identity_label
from gitlab_pypi_proxy.services import Services

log = logging.getLogger("proxy.operator")


def who(request: Request) -> str:
    """A proxy user's name, `gitlab:<hash of the passthrough token>`, or `anonymous`."""
    identity = identity_of(request.scope)
    token = None
    if identity.passthrough:
        credentials = basic_credentials(request.headers.get("authorization"))
        token = credentials[1] if credentials else None
    return identity_label(identity.user, token)


def client_address(request: Request) -> str:
    client = request.scope.get("client")
    return client[0] if client else "-"


async def served(
    request: Request, sha256: str, filename: str, cache: str, source: str | None = None
) -> None:
    """One line for a distribution file served (GET only: a HEAD sends no file)."""
    services: Services = request.app.state.services
    if services.audit is None or request.method != "GET":
        return
    if source is None:
        listed = await services.stores.locations.of(sha256)
        source = next((f.source for f in listed if f.filename == filename), "-")
    advisories: tuple[str, ...] = ()
    project, version = file_project_name(filename), file_version(filename)
    if project and version and services.config.guard.policy.vulnerable != "off":
        found = services.advisories.index.advisories(project, version)
        advisories = tuple(a.id for a in found)
    notes = ("yanked for advisories, served to an exact pin",) if advisories else ()
    services.audit.record(
        AuditEntry(
            "download",
            who(request),
            client_address(request),
            filename,
            sha256,
            source,
            cache=cache,
            advisories=advisories,
            notes=notes,
        )
    )


def uploaded(request: Request, sha256: str, filename: str, source: str) -> None:
    services: Services = request.app.state.services
    if services.audit is not None:
        entry = AuditEntry(
            "upload", who(request), client_address(request), filename, sha256, source
        )
        services.audit.record(entry)


def operated(
    request: Request,
    event: Literal["refresh", "purge", "yank", "unyank", "projects"],
    *,
    project: str | None = None,
    version: str | None = None,
    filename: str = "",
    sha256: str = "",
    notes: tuple[str, ...] = (),
) -> None:
    """An operator's action: one log line and one line of the trail, each naming who did it."""
    by = who(request)
    what = " ".join(p for p in (project, version, filename or sha256) if p)
    log.info("%s by %s: %s%s", event, by, what, "".join(f"; {n}" for n in notes))
    services: Services = request.app.state.services
    if services.audit is not None:
        services.audit.record(
            AuditEntry(
                event,
                by,
                client_address(request),
                filename,
                sha256,
                "-",
                notes=notes,
                project=project,
                version=version,
            )
        )
