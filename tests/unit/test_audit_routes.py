"""The routes' lines in the audit trail (gitlab_pypi_proxy.http.audit_lines): an upload is one
line, with who sent which file to which source, and nothing of the credentials."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import httpx2
from starlette.applications import Starlette
from starlette.routing import Route

from gitlab_pypi_proxy.auth import Identity
from gitlab_pypi_proxy.config import AuthConfig, UploadConfig
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.errors import ProxyError
from gitlab_pypi_proxy.http import error_responses
from gitlab_pypi_proxy.http.upload import upload
from gitlab_pypi_proxy.policy.audit_trail import AuditTrail
from gitlab_pypi_proxy.storage.uploads import RecentUploads
from tests.unit.asgi import asgi_client
from tests.unit.test_metrics_counts import Accepting


async def test_an_upload_is_one_line_of_the_trail(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit.jsonl", max_size=2**20, keep=2)
    trail.start()
    uploads = RecentUploads(tmp_path)

    async def uploaded(name: str) -> None:
        pass

    routes = Starlette(
        routes=[Route("/upload/", upload, methods=["POST"])],
        exception_handlers={ProxyError: error_responses.handle},
    )
    routes.state.services = SimpleNamespace(
        config=SimpleNamespace(upload=UploadConfig(default_source="platform"), auth=AuthConfig()),
        upload_target=lambda name: Accepting() if name == "platform" else None,
        uploads=uploads,
        uploaded=uploaded,
        audit=trail,
    )

    async def app(scope: dict, receive: object, send: object) -> None:  # as access control does
        scope["identity"] = Identity(
            "ci", None, frozenset({"platform"}), httpx2.BasicAuth("ci", "glpat-upload-secret")
        )
        await routes(scope, receive, send)

    filename, data = make_wheel("acme-tool", "1.0")
    async with asgi_client(app, "10.1.2.3") as client:
        answer = await client.post(
            "/upload/",
            data={"name": "acme-tool", "version": "1.0", ":action": "file_upload"},
            files={"content": (filename, data)},
            auth=("ci", "glpat-upload-secret"),
        )
    assert answer.status_code == 201
    trail.close()
    uploads.close()
    text = (tmp_path / "audit.jsonl").read_text()
    [line] = [json.loads(raw) for raw in text.splitlines()]
    assert (line["event"], line["identity"], line["client"]) == ("upload", "ci", "10.1.2.3")
    assert (line["file"], line["project"], line["version"]) == (filename, "acme-tool", "1.0")
    assert line["sha256"] == hashlib.sha256(data).hexdigest()
    assert line["source"] == "platform"
    assert "glpat-upload-secret" not in text
