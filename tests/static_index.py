"""A small static PEP 691 index for the tests, as an ASGI app (serve it with tests/servers.py):
upload times (PEP 700), provenance URLs (PEP 740) and project status (PEP 792), which pypiserver
does not give. JSON only, as a public index answers a client that asks for JSON."""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gitlab_pypi_proxy.demo.dists import make_wheel

JSON = "application/vnd.pypi.simple.v1+json"


@dataclass
class StaticFile:
    filename: str
    data: bytes
    uploaded: datetime | None
    provenance: bytes | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class StaticIndex:
    projects: dict[str, list[StaticFile]] = field(default_factory=dict)
    status: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # paths asked, in order

    def add_wheel(
        self,
        name: str,
        version: str,
        uploaded: datetime | None,
        provenance: bytes | None = None,
    ) -> StaticFile:
        file = StaticFile(*make_wheel(name, version), uploaded, provenance)
        self.projects.setdefault(name, []).append(file)
        return file

    def _page(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.requests.append(request.url.path)
        files = self.projects.get(name)
        if files is None:
            return Response("not found", status_code=404)
        entries = []
        for file in files:
            entry: dict[str, object] = {
                "filename": file.filename,
                "url": f"../../files/{file.filename}",
                "hashes": {"sha256": file.sha256},
                "size": len(file.data),
            }
            if file.uploaded is not None:
                entry["upload-time"] = file.uploaded.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if file.provenance is not None:
                entry["provenance"] = f"../../provenance/{file.filename}"
            entries.append(entry)
        meta: dict[str, object] = {"api-version": "1.4"}
        if name in self.status:
            status, reason = self.status[name]
            meta["project-status"] = {"status": status, **({"reason": reason} if reason else {})}
        document = {"meta": meta, "name": name, "files": entries}
        return JSONResponse(document, media_type=JSON)

    def _find(self, filename: str) -> StaticFile | None:
        return next(
            (f for fs in self.projects.values() for f in fs if f.filename == filename), None
        )

    def _file(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        file = self._find(request.path_params["filename"])
        if file is None:
            return Response("not found", status_code=404)
        return Response(file.data, media_type="application/octet-stream")

    def _provenance(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        file = self._find(request.path_params["filename"])
        if file is None or file.provenance is None:
            return Response("not found", status_code=404)
        return Response(file.provenance, media_type="application/json")

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/simple/{name}/", self._page),
                Route("/files/{filename}", self._file),
                Route("/provenance/{filename}", self._provenance),
            ]
        )


def provenance_document(marker: str) -> bytes:
    """Bytes shaped like a PEP 740 provenance object (not a verifiable one)."""
    return json.dumps({"version": 1, "attestation_bundles": [], "marker": marker}).encode()
