"""A test double of GitLab's PyPI registry and Packages API, as `reference/gitlab-upstream.md` says
GitLab really behaves: 302 to the public index for a missing name, absolute links on an external
host with numeric project ids, the auth matrix, Packages API pagination (ordering, no totals past
10,000 items), object-storage redirects, POST-only uploads that store the digests they are sent
without hashing anything.

Knobs for production-sized tests: `add_versions` (thousands of versions quickly), `latency` (every
answer delayed) and `latency_for` (the answers to some paths), `throttle` (429 with Retry-After for
a while, as GitLab's rate limiter answers), and every request recorded with its answer's status
(`requests`, `count`, `matching`).
"""

import asyncio
import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gitlab_pypi_proxy.demo.dists import make_wheel

PUBLIC_INDEX = "https://pypi.org/simple"
EXTERNAL_URL = "https://gitlab.example.com"
_UPLOAD_FIELDS = (
    "name",
    "version",
    "requires_python",
    "md5_digest",
    "sha256_digest",
    "metadata_version",
    "author_email",
    "description",
    "description_content_type",
    "summary",
    "keywords",
)
_MAX_TOTALS = 10_000  # past this many items GitLab sends no X-Total / X-Total-Pages
# Wheels no test interpreter installs: the extra files of a version in `add_versions`.
_FOREIGN_TAGS = (
    "cp27-cp27m-win32",
    "cp27-cp27mu-manylinux1_i686",
    "cp35-cp35m-win_amd64",
    "cp36-cp36m-macosx_10_9_x86_64",
    "cp34-cp34m-manylinux1_x86_64",
    "cp33-cp33m-win32",
    "cp26-cp26m-manylinux1_i686",
)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Project:
    id: int
    path: str
    public: bool


@dataclass
class Token:
    read: set[int]
    write: set[int]
    job: bool = False


@dataclass
class PackageFile:
    id: int
    package_id: int
    project_id: int
    name: str  # as stored, unnormalized
    version: str
    filename: str
    sha256: str | None  # as the uploader sent it: GitLab never hashes the bytes
    content: bytes
    created_at: datetime

    @property
    def md5(self) -> str:
        return hashlib.md5(self.content).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lowercase names
    fields: dict[str, str] | None = None  # the multipart fields of an upload (not the file)
    status: int | None = None  # the answer's status, once sent
    at: float = field(default_factory=time.monotonic)  # when it arrived (system-wide clock)


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def _held(
    content: bytes, after: int, release: threading.Event, headers: dict[str, str]
) -> Response:
    async def body() -> Any:
        yield content[:after]
        await asyncio.to_thread(release.wait, 60)
        yield content[after:]

    headers = {**headers, "content-length": str(len(content))}
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


@dataclass
class GitLabDouble:
    external_url: str = EXTERNAL_URL
    forward_missing: bool = True  # "forward package requests": a missing name is a 302 to PyPI
    latency: float = 0.0  # seconds added to every answer (a far-away GitLab)
    latency_for: dict[str, float] = field(default_factory=dict)  # path regex → extra seconds
    down_status: int | None = None  # answer every request with this status (502, 503, ...)
    throttled_until: float = 0.0  # time.monotonic() until which every request gets 429
    retry_after: int = 60  # the Retry-After (seconds) sent with a 429
    _throttle_next: float | None = None  # a throttle window that starts with the next request
    object_storage_url: str | None = None  # files answer 302 there when set
    max_file_size: int = 3 * 2**30
    projects: dict[int, Project] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    files: list[PackageFile] = field(default_factory=list)
    requires_python: dict[tuple[int, str, str], str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    holds: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)
    _ids: int = 1000
    # indexes over `files`, kept by add_package_file: look-ups stay fast with 10,000 files
    _by_name: dict[str, list[PackageFile]] = field(default_factory=dict)
    _by_package: dict[int, list[PackageFile]] = field(default_factory=dict)
    _package_ids: dict[tuple[int, str, str], int] = field(default_factory=dict)
    _entities: dict[int, dict[str, Any]] = field(default_factory=dict)  # Packages API entities
    _listings: dict[tuple, list[Any]] = field(default_factory=dict)  # ordered, filtered

    # --- data set -----------------------------------------------------------------------------

    def add_project(self, project_id: int, path: str, *, public: bool = False) -> None:
        self.projects[project_id] = Project(project_id, path, public)

    def add_group(self, group_id: int, path: str) -> None:
        self.groups[group_id] = path

    def add_token(
        self, token: str, *, read: set[int] = frozenset(), write: set[int] = frozenset()
    ) -> None:
        """A personal/deploy token: `write` implies read."""
        self.tokens[token] = Token(set(read) | set(write), set(write))

    def add_job_token(
        self, token: str, *, read: set[int] = frozenset(), write: set[int] = frozenset()
    ) -> None:
        """A CI job token: accepted only as basic auth with user name `gitlab-ci-token`."""
        self.tokens[token] = Token(set(read) | set(write), set(write), job=True)

    def add_package_file(
        self,
        project_id: int,
        name: str,
        version: str,
        filename: str,
        content: bytes,
        *,
        requires_python: str | None = None,
        created_at: datetime | None = None,
        sha256: str | None = "",
    ) -> str:
        """Store a file as an upload would; `sha256=None` stores it without a digest.

        Returns the stored sha256 (by default the real one).
        """
        digest = hashlib.sha256(content).hexdigest() if sha256 == "" else sha256
        package_id = self._package_ids.get((project_id, name, version))
        if package_id is None:
            package_id = self._package_ids[(project_id, name, version)] = self._next_id()
        file = PackageFile(
            self._next_id(),
            package_id,
            project_id,
            name,
            version,
            filename,
            digest,
            content,
            created_at or datetime.now(UTC),
        )
        self.files.append(file)
        self._by_name.setdefault(_normalize(name), []).append(file)
        self._by_package.setdefault(package_id, []).append(file)
        if requires_python is not None:
            self.requires_python[(project_id, name, version)] = requires_python
        return digest or ""

    def add_versions(
        self,
        project_id: int,
        name: str,
        count: int,
        *,
        files_per_version: int = 1,
        first: datetime = datetime(2024, 1, 1, tzinfo=UTC),
        every: timedelta = timedelta(hours=1),
    ) -> list[str]:
        """`count` versions 1.0.0, 1.0.1, ... of `name`, one created every `every` from `first`.

        Each has a real py3 wheel; `files_per_version` > 1 adds wheels for platforms no test
        interpreter installs (a few bytes each, never downloaded), uploaded a minute later than
        the version's first file. Returns the versions, oldest first.
        """
        if files_per_version > len(_FOREIGN_TAGS) + 1:
            raise ValueError(f"at most {len(_FOREIGN_TAGS) + 1} files per version")
        versions = [f"1.0.{n}" for n in range(count)]
        dist = _normalize(name).replace("-", "_")
        for n, version in enumerate(versions):
            created = first + n * every
            filename, content = make_wheel(name, version)
            self.add_package_file(project_id, name, version, filename, content, created_at=created)
            for tag in _FOREIGN_TAGS[: files_per_version - 1]:
                foreign = f"{dist}-{version}-{tag}.whl"
                later = created + timedelta(minutes=1)
                self.add_package_file(
                    project_id, name, version, foreign, foreign.encode(), created_at=later
                )
        return versions

    def throttle(self, seconds: float, retry_after: int) -> None:
        """Answer every request with 429 and `Retry-After: retry_after` for `seconds`, counted
        from the next request (however long the client takes to send it)."""
        self.retry_after = retry_after
        self._throttle_next = seconds

    def replace_content(self, project_id: int, filename: str, content: bytes) -> None:
        """Serve other bytes under a stored file (its recorded sha256 stays): corruption."""
        for file in self.files:
            if file.project_id == project_id and file.filename == filename:
                file.content = content

    def hold(self, filename: str, after: int) -> threading.Event:
        """Send the first `after` bytes of `filename`, then nothing more until the returned event
        is set (for at most a minute): a download caught in flight, without timing."""
        release = threading.Event()
        self.holds[filename] = (after, release)
        return release

    def count(self, method: str, path_prefix: str) -> int:
        return sum(
            1 for r in self.requests if r.method == method and r.path.startswith(path_prefix)
        )

    def matching(self, pattern: str, method: str = "GET") -> list[Recorded]:
        """The requests whose path matches the regular expression `pattern` in full."""
        compiled = re.compile(pattern)
        return [r for r in self.requests if r.method == method and compiled.fullmatch(r.path)]

    def uploads(self) -> list[Recorded]:
        return [r for r in self.requests if r.fields is not None]

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # --- who is asking ------------------------------------------------------------------------

    def _token(self, request: Request) -> Token | None:
        """The caller's token, GitLab's way: a basic-auth password that matches none is anonymous;
        JOB-TOKEN headers are not accepted on the PyPI routes."""
        header = request.headers.get("private-token") or request.headers.get("deploy-token")
        if header:
            token = self.tokens.get(header)
            return token if token and not token.job else None
        authorization = request.headers.get("authorization", "")
        if not authorization.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return None
        token = self.tokens.get(password)
        if token is None or token.job != (user == "gitlab-ci-token"):
            return None
        return token

    def _can_read(self, token: Token | None, project: Project) -> bool:
        return project.public or (token is not None and project.id in token.read)

    def _project(self, ref: str) -> Project | None:
        ref = unquote(ref)
        if ref.isdigit():
            return self.projects.get(int(ref))
        return next((p for p in self.projects.values() if p.path == ref), None)

    def _group_projects(self, ref: str) -> list[Project] | None:
        ref = unquote(ref)
        path = self.groups.get(int(ref)) if ref.isdigit() else ref
        if path is None or path not in self.groups.values():
            return None
        return [p for p in self.projects.values() if p.path.startswith(path + "/")]

    def _readable_project(self, request: Request) -> Project | Response:
        """The project of the path, or GitLab's refusal: 401 anonymous, 404 non-member/unknown."""
        project = self._project(request.path_params["project"])
        token = self._token(request)
        if project is None:
            return _message(404, "404 Project Not Found")
        if self._can_read(token, project):
            return project
        if token is None:
            return _message(
                401,
                "401 Unauthorized",
                {"www-authenticate": 'Basic realm="GitLab Packages Registry"'},
            )
        return _message(404, "404 Project Not Found")

    def _readable_group(self, request: Request) -> list[Project] | Response:
        projects = self._group_projects(request.path_params["group"])
        if projects is None:
            return _message(404, "404 Group Not Found")
        token = self._token(request)
        return [p for p in projects if self._can_read(token, p)]

    # --- PyPI API -----------------------------------------------------------------------------

    def _files_named(self, projects: list[Project], requested: str) -> list[PackageFile]:
        # GitLab lowercases the request only: acme-utils finds Acme.Utils, acme_utils does not.
        ids = {p.id for p in projects}
        return [f for f in self._by_name.get(requested.lower(), []) if f.project_id in ids]

    def _page(self, requested: str, files: list[PackageFile]) -> Response:
        if not files:
            if self.forward_missing:
                return Response(
                    status_code=302, headers={"location": f"{PUBLIC_INDEX}/{requested}/"}
                )
            return _message(404, "404 Package Not Found")
        title = files[0].name
        links = []
        for f in files:
            url = (
                f"{self.external_url}/api/v4/projects/{f.project_id}/packages/pypi/files/"
                f"{f.sha256 or ''}/{f.filename}"
            )
            if f.sha256:
                url += f"#sha256={f.sha256}"
            requires = self.requires_python.get((f.project_id, f.name, f.version), "")
            links.append(
                f'<a href="{url}" data-requires-python="{escape(requires)}">{f.filename}</a>'
            )
        body = (
            "<!DOCTYPE html>\n        <html>\n          <head>\n"
            f"            <title>Links for {escape(title)}</title>\n          </head>\n"
            f"          <body>\n            <h1>Links for {escape(title)}</h1>\n"
            f"            {''.join(links)}\n          </body>\n        </html>"
        )
        return Response(body, media_type="text/html")

    async def project_simple(self, request: Request) -> Response:
        project = self._readable_project(request)
        if isinstance(project, Response):
            return project
        name = request.path_params["name"]
        return self._page(name, self._files_named([project], name))

    async def group_simple(self, request: Request) -> Response:
        projects = self._readable_group(request)
        if isinstance(projects, Response):
            return projects
        name = request.path_params["name"]
        return self._page(name, self._files_named(projects, name))

    async def project_root(self, request: Request) -> Response:
        project = self._readable_project(request)
        if isinstance(project, Response):
            return project
        seen: dict[tuple[str, str], PackageFile] = {}
        for f in self.files:
            if f.project_id == project.id:
                seen.setdefault((f.name, f.version), f)
        links = "".join(
            f'<a href="{self.external_url}/api/v4/projects/{project.id}/packages/pypi/simple/'
            f'{_normalize(name)}">{escape(name)}</a>'
            for name, _ in seen
        )
        body = (
            "<!DOCTYPE html>\n<html>\n  <head>\n    <title>Links for "
            f"{escape(project.path)}</title>\n  </head>\n  <body>\n    <h1>Links for "
            f"{escape(project.path)}</h1>\n    {links}\n  </body>\n</html>"
        )
        return Response(body, media_type="text/html")

    def _file(self, projects: list[Project], request: Request) -> Response:
        sha256, filename = request.path_params["sha256"], request.path_params["filename"]
        ids = {p.id for p in projects}
        found = next(
            (
                f
                for f in self.files
                if f.project_id in ids and f.sha256 == sha256 and f.filename == filename
            ),
            None,
        )
        if found is None:
            return _message(404, "404 Package File Not Found")
        if self.object_storage_url:
            signed = f"{self.object_storage_url}/object-storage/{found.id}/{filename}?X-Sig=abc"
            return Response(status_code=302, headers={"location": signed})
        return self._content(found, request)

    def _content(self, file: PackageFile, request: Request) -> Response:
        """The file, honouring one byte range as both of GitLab's file paths do: Workhorse
        serves a local file with Go's http.ServeContent, object storage serves ranges natively."""
        headers = {
            "content-disposition": f'attachment; filename="{file.filename}"',
            "accept-ranges": "bytes",
        }
        size = len(file.content)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", "").strip())
        if match and (match.group(1) or match.group(2)):
            first, last = match.groups()
            start, end = (
                (max(0, size - int(last)), size - 1)
                if not first
                else (int(first), min(size - 1, int(last)) if last else size - 1)
            )
            if start >= size or end < start:
                headers["content-range"] = f"bytes */{size}"
                return Response(status_code=416, headers=headers)
            headers["content-range"] = f"bytes {start}-{end}/{size}"
            return Response(
                file.content[start : end + 1],
                status_code=206,
                media_type="application/octet-stream",
                headers=headers,
            )
        if file.filename in self.holds:
            return _held(file.content, *self.holds[file.filename], headers)
        return Response(file.content, media_type="application/octet-stream", headers=headers)

    async def project_file(self, request: Request) -> Response:
        project = self._readable_project(request)
        if isinstance(project, Response):
            return project
        return self._file([project], request)

    async def group_file(self, request: Request) -> Response:
        projects = self._readable_group(request)
        if isinstance(projects, Response):
            return projects
        return self._file(projects, request)

    async def object_storage(self, request: Request) -> Response:
        if request.query_params.get("X-Sig") != "abc":
            return Response("<Error>AccessDenied</Error>", status_code=403)
        file_id = int(request.path_params["file_id"])
        found = next((f for f in self.files if f.id == file_id), None)
        return self._content(found, request) if found else Response(status_code=404)

    async def upload(self, request: Request) -> Response:
        if request.method != "POST":
            return _message(405, "405 Method Not Allowed")
        project = self._project(request.path_params["project"])
        token = self._token(request)
        if project is None:
            return _message(404, "404 Project Not Found")
        if token is None:
            return _message(
                401,
                "401 Unauthorized",
                {"www-authenticate": 'Basic realm="GitLab Packages Registry"'},
            )
        if project.id not in token.read:
            return _message(404, "404 Project Not Found")
        if project.id not in token.write:
            return _message(403, "403 Forbidden")
        form = await request.form(max_part_size=16 * 2**20)
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k in _UPLOAD_FIELDS}
        request.scope["recorded"].fields = fields
        content = form.get("content")
        if content is None or isinstance(content, str):
            return _message(400, "400 Bad request - content is missing")
        data = await content.read()
        name, version = fields.get("name", ""), fields.get("version", "")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or not version:
            return _message(400, "400 Bad request - name is invalid")
        if len(data) > self.max_file_size:
            return _message(400, "400 Bad request - File is too large")
        filename = content.filename or ""
        if any(f.project_id == project.id and f.filename == filename for f in self.files):
            return _message(
                400, "400 Bad request - Validation failed: File name has already been taken"
            )
        self.add_package_file(
            project.id,
            name,
            version,
            filename,
            data,
            sha256=fields.get("sha256_digest") or None,
        )
        # The version's requires_python is upserted: the last upload wins for all its files.
        self.requires_python[(project.id, name, version)] = fields.get("requires_python", "")[:255]
        return _message(201, "201 Created")

    # --- Packages API -------------------------------------------------------------------------

    def _package_entities(self, projects: list[Project], group: bool) -> list[dict[str, Any]]:
        ids = {p.id for p in projects}
        entities = []
        for package_id, files in sorted(self._by_package.items()):
            if files[0].project_id not in ids:
                continue
            entity = self._entities.get(package_id)
            if entity is None:  # a package's entity never changes: built once
                entity = self._entities[package_id] = self._entity(package_id, files[0])
            if group:
                project = self.projects[files[0].project_id]
                entity = {**entity, "project_id": project.id, "project_path": project.path}
            entities.append(entity)
        return entities

    def _entity(self, package_id: int, first: PackageFile) -> dict[str, Any]:
        return {
            "id": package_id,
            "name": first.name,
            "version": first.version,
            "package_type": "pypi",
            "status": "default",
            "created_at": first.created_at.isoformat().replace("+00:00", "Z"),
            "_links": {
                "web_path": f"/{self.projects[first.project_id].path}/-/packages/{package_id}"
            },
        }

    def _listing(self, projects: list[Project], group: bool, request: Request) -> list[Any]:
        """The packages a Packages API query lists, in its order; the same query asked again
        (the pages of one listing) is answered from a memo until a file is added."""
        query = request.query_params
        key = (
            tuple(sorted(p.id for p in projects)),
            group,
            *(query.get(k, "") for k in ("package_name", "order_by", "sort")),
            len(self.files),
        )
        listed = self._listings.get(key)
        if listed is None:
            if len(self._listings) > 64:
                self._listings.clear()
            listed = self._listings[key] = self._ordered(
                self._package_entities(projects, group), query
            )
        return listed

    @staticmethod
    def _ordered(items: list[Any], query: Any) -> list[Any]:
        if query.get("package_name"):  # a fuzzy substring match, like GitLab's
            needle = query["package_name"].lower()
            items = [i for i in items if needle in i["name"].lower()]
        order = query.get("order_by")
        if order in ("created_at", "name", "version"):
            items = sorted(items, key=lambda i: (i[order], i["id"]))
        if query.get("sort") == "desc":
            items = items[::-1]
        return items

    def _paginate(self, request: Request, items: list[Any]) -> Response:
        query = request.query_params
        per_page = max(1, min(100, int(query.get("per_page", 20))))
        page = max(1, int(query.get("page", 1)))
        total_pages = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {
            "x-page": str(page),
            "x-per-page": str(per_page),
            "x-next-page": str(page + 1) if page < total_pages else "",
            "x-prev-page": str(page - 1) if page > 1 else "",
        }
        links = [f'<{request.url.include_query_params(page=1)}>; rel="first"']
        if page < total_pages:
            links.insert(0, f'<{request.url.include_query_params(page=page + 1)}>; rel="next"')
        if page > 1:
            links.insert(0, f'<{request.url.include_query_params(page=page - 1)}>; rel="prev"')
        if len(items) <= _MAX_TOTALS:  # GitLab counts no further
            headers["x-total"] = str(len(items))
            headers["x-total-pages"] = str(total_pages)
            links.append(f'<{request.url.include_query_params(page=total_pages)}>; rel="last"')
        headers["link"] = ", ".join(links)
        return Response(json.dumps(chunk), media_type="application/json", headers=headers)

    def _api_auth(self, request: Request) -> Token | None:
        # The REST API accepts PRIVATE-TOKEN / basic auth the same way here.
        return self._token(request)

    async def project_packages(self, request: Request) -> Response:
        project = self._project(request.path_params["project"])
        if project is None or not self._can_read(self._api_auth(request), project):
            return _message(404, "404 Project Not Found")
        if request.query_params.get("package_type", "pypi") != "pypi":
            return self._paginate(request, [])
        return self._paginate(request, self._listing([project], False, request))

    async def group_packages(self, request: Request) -> Response:
        projects = self._group_projects(request.path_params["group"])
        if projects is None:
            return _message(404, "404 Group Not Found")
        token = self._api_auth(request)
        readable = [p for p in projects if self._can_read(token, p)]
        return self._paginate(request, self._listing(readable, True, request))

    async def package_files(self, request: Request) -> Response:
        project = self._project(request.path_params["project"])
        if project is None or not self._can_read(self._api_auth(request), project):
            return _message(404, "404 Project Not Found")
        package_id = int(request.path_params["package_id"])
        files = [f for f in self._by_package.get(package_id, []) if f.project_id == project.id]
        if not files:
            return _message(404, "404 Package Not Found")
        items = [
            {
                "id": f.id,
                "package_id": f.package_id,
                "created_at": f.created_at.isoformat().replace("+00:00", "Z"),
                "file_name": f.filename,
                "size": len(f.content),
                "file_md5": f.md5,
                "file_sha1": hashlib.sha1(f.content).hexdigest(),
                "file_sha256": f.sha256,
            }
            for f in files
        ]
        return self._paginate(request, items)

    def _throttled(self) -> Response:
        """GitLab's rate limiter (Rack::Attack): 429, plain text, Retry-After in seconds."""
        headers = {
            "retry-after": str(self.retry_after),
            "ratelimit-name": "throttle_authenticated_api",
            "ratelimit-remaining": "0",
        }
        return Response("Retry later\n", status_code=429, headers=headers, media_type="text/plain")

    # --- the ASGI app -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        api = "/api/v4"
        pypi = api + "/projects/{project}/packages/pypi"
        group_pypi = api + "/groups/{group}/-/packages/pypi"
        routes = [
            Route(pypi + "/simple", self.project_root),
            Route(pypi + "/simple/{name}", self.project_simple),
            Route(pypi + "/files/{sha256}/{filename}", self.project_file),
            Route(pypi, self.upload, methods=["POST", "PUT"]),
            Route(group_pypi + "/simple/{name}", self.group_simple),
            Route(group_pypi + "/files/{sha256}/{filename}", self.group_file),
            Route(api + "/projects/{project}/packages", self.project_packages),
            Route(
                api + "/projects/{project}/packages/{package_id:int}/package_files",
                self.package_files,
            ),
            Route(api + "/groups/{group}/packages", self.group_packages),
            Route("/object-storage/{file_id:int}/{filename}", self.object_storage),
        ]
        inner = Starlette(routes=routes)
        inner.router.redirect_slashes = False

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return await inner(scope, receive, send)
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            query = dict(
                part.split("=", 1) if "=" in part else (part, "")
                for part in scope.get("query_string", b"").decode().split("&")
                if part
            )
            # Route on the raw path as GitLab does: `acme%2Fplatform` is one path segment.
            raw = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
            scope = {**scope, "path": unquote(re.sub("%2[fF]", "%252F", raw))}
            recorded = scope["recorded"] = Recorded(scope["method"], raw, query, headers)
            self.requests.append(recorded)

            async def record_status(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    recorded.status = message["status"]
                await send(message)

            extra = sum(s for p, s in self.latency_for.items() if re.fullmatch(p, raw))
            if self.latency or extra:
                await asyncio.sleep(self.latency + extra)
            if self.down_status is not None:
                response = _message(self.down_status, f"{self.down_status} Unavailable")
                return await response(scope, receive, record_status)
            if self._throttle_next is not None:
                self.throttled_until = time.monotonic() + self._throttle_next
                self._throttle_next = None
            if time.monotonic() < self.throttled_until:
                return await self._throttled()(scope, receive, record_status)
            await inner(scope, receive, record_status)

        return app
