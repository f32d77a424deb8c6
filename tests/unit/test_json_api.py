"""The PyPI JSON API (gitlab_pypi_proxy.http.json_api): the public index's document shape, field
by field; the reader's sources and the policy exactly as on the simple page; METADATA read for one
release only; ETag, gzip and HEAD as the simple pages answer them; one-line 404s."""

import hashlib
import io
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from gitlab_pypi_proxy.auth import Authenticator
from gitlab_pypi_proxy.config import AuthConfig, UserConfig
from gitlab_pypi_proxy.errors import ProxyError
from gitlab_pypi_proxy.http import error_responses
from gitlab_pypi_proxy.http.access import AccessControl
from gitlab_pypi_proxy.http.app import json_api, project_page
from gitlab_pypi_proxy.http.json_api import newest
from gitlab_pypi_proxy.http.page_memo import PageMemo
from gitlab_pypi_proxy.model import DistFile
from gitlab_pypi_proxy.policy import rules
from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.policy.rules import PolicySettings
from gitlab_pypi_proxy.sources.base import RangeReader
from gitlab_pypi_proxy.storage.stores import Stores
from tests.osv_export import advisory, ecosystem_range, write_export
from tests.unit.asgi import asgi_client
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed

NOW = datetime.now(UTC)
UPLOADED = datetime(2024, 11, 6, 22, 37, 9, 220617, tzinfo=UTC)
METADATA = """Metadata-Version: 2.1
Name: Acme_Core
Version: {version}
Summary: The core of Acme
Home-page: https://example.org/acme
Author: A. Developer
Author-email: dev@example.org
License: MIT
Keywords: acme,core
Classifier: Programming Language :: Python :: 3
Requires-Python: >=3.9
Requires-Dist: requests>=2
Requires-Dist: rich; extra == "cli"
Provides-Extra: cli
Project-URL: Source, https://github.com/acme/core
Project-URL: Changelog, https://example.org/changes

The long description.
"""


def wheel(name: str, version: str, metadata: str | None = None) -> tuple[str, bytes]:
    """A wheel whose METADATA is `metadata` (default: METADATA above for that version)."""
    dist = f"{name}-{version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        body = metadata if metadata is not None else METADATA.format(version=version)
        archive.writestr(f"{dist}.dist-info/METADATA", body)
    return f"{dist}-py3-none-any.whl", buffer.getvalue()


class RangedSource(FakeSource):
    """A FakeSource that answers range reads of its files, as an upstream that allows them."""

    def range_reader(self, file: DistFile, *, background: bool) -> RangeReader:
        data = self.contents[file.sha256]

        async def read(spec: str) -> tuple[bytes, str | None]:
            self.ranged.append(file.filename)
            first, _, last = spec.removeprefix("bytes=").partition("-")
            if first:
                start, end = int(first), min(int(last), len(data) - 1)
            else:
                start, end = max(0, len(data) - int(last)), len(data) - 1
            return data[start : end + 1], f"bytes {start}-{end}/{len(data)}"

        return read


def put(
    source: FakeSource,
    project: str,
    filename: str,
    content: bytes,
    **details: Any,
) -> DistFile:
    """Add a file with its PEP 700 details (and more DistFile fields) to `source`'s page."""
    sha256 = hashlib.sha256(content).hexdigest()
    file = replace(source.add(project, filename, sha256, content), **details)
    source.pages[project][-1] = file
    return file


def policy(table: dict[str, object]) -> PolicySettings:
    def error(key: str, message: str) -> Exception:
        return ValueError(f"{key}: {message}")

    raw = [
        {"name": "platform", "gitlab_project": "x"},
        {"name": "secret", "gitlab_project": "y"},
        {"name": "public", "url": "u"},
    ]
    return rules.parse(
        table, raw, {}, base=Path("/"), cache_directory=Path("/c"), error=error
    ).policy


USERS = (
    UserConfig("all", password="all-pw"),
    UserConfig("reader", password="reader-pw", read=frozenset({"platform"})),
)
ALL = ("all", "all-pw")
READER = ("reader", "reader-pw")


class World:
    """The JSON API and simple page routes behind access control, over two GitLab-like sources
    (platform, secret) and a public one, composed as the services compose them."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        settings: PolicySettings | None = None,
        advisories: Advisories | None = None,
    ) -> None:
        self.platform, self.secret = RangedSource("platform"), RangedSource("secret")
        self.public = RangedSource("public")
        self.stores = Stores.local(tmp_path, 2**30)
        self.advisories = advisories or Advisories(None)
        self.built = composed(
            tmp_path,
            [self.platform, self.secret],
            [self.public],
            stores=self.stores,
            policy=settings,
            advisories=self.advisories,
        )
        auth = Authenticator(AuthConfig(anonymous_read=False), USERS, frozenset(), {})
        self.app = Starlette(
            routes=[
                Route("/pypi/{name}/json", json_api, methods=["GET", "HEAD"]),
                Route("/pypi/{name}/{version}/json", json_api, methods=["GET", "HEAD"]),
                Route("/simple/{name}/", project_page, methods=["GET", "HEAD"]),
            ],
            middleware=[Middleware(AccessControl)],
            exception_handlers={ProxyError: error_responses.handle},
        )
        self.app.state.services = SimpleNamespace(
            composed=self.built, advisories=self.advisories, auth=auth
        )
        self.app.state.memo = PageMemo(self.stores.coordinator)

    def client(self) -> httpx2.AsyncClient:
        return asgi_client(self.app, "127.0.0.1")

    async def close(self) -> None:
        await self.built.close()


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    made = World(tmp_path)
    yield made
    await made.close()


async def test_the_project_document_has_the_public_index_shape(world: World) -> None:
    name, data = wheel("acme_core", "1.1")
    whl = put(world.platform, "acme-core", name, data, size=len(data), upload_time=UPLOADED)
    sdist = put(
        world.platform,
        "acme-core",
        "acme_core-1.1.tar.gz",
        b"sdist",
        requires_python=">=3.9",
    )
    put(world.platform, "acme-core", "acme_core-1.0.tar.gz", b"old", upload_time=UPLOADED)
    async with world.client() as client:
        answer = await client.get("/pypi/acme-core/json", auth=ALL)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    doc = answer.json()
    assert list(doc) == ["info", "releases", "urls", "vulnerabilities"]
    info = doc["info"]
    assert info["name"] == "Acme_Core"  # as METADATA spells it
    assert info["version"] == "1.1"
    assert info["summary"] == "The core of Acme"
    assert info["requires_dist"] == ["requests>=2", 'rich; extra == "cli"']
    assert info["requires_python"] == ">=3.9"
    assert info["project_urls"] == {
        "Source": "https://github.com/acme/core",
        "Changelog": "https://example.org/changes",
    }
    assert info["home_page"] == "https://example.org/acme"
    assert info["license"] == "MIT"
    assert (info["author"], info["author_email"]) == ("A. Developer", "dev@example.org")
    assert info["keywords"] == "acme,core"
    assert info["classifiers"] == ["Programming Language :: Python :: 3"]
    assert info["provides_extra"] == ["cli"]
    assert info["description"] == "The long description.\n"
    assert (info["yanked"], info["yanked_reason"]) == (False, None)
    assert info["release_url"] == "http://proxy.internal/pypi/acme-core/1.1/json"
    assert list(doc["releases"]) == ["1.0", "1.1"]
    assert [f["filename"] for f in doc["urls"]] == [whl.filename, sdist.filename]
    assert doc["releases"]["1.1"] == doc["urls"]
    assert doc["vulnerabilities"] == []
    entry = doc["urls"][0]
    assert entry == {
        "comment_text": "",
        "core-metadata": entry["core-metadata"],  # whether obtained yet: below
        "digests": {"sha256": whl.sha256},
        "downloads": -1,
        "filename": whl.filename,
        "has_sig": False,
        "packagetype": "bdist_wheel",
        "python_version": "py3",
        "requires_python": None,
        "size": len(data),
        "upload_time": "2024-11-06T22:37:09",
        "upload_time_iso_8601": "2024-11-06T22:37:09.220617Z",
        "url": f"http://proxy.internal/files/{whl.sha256}/{whl.filename}",
        "yanked": False,
        "yanked_reason": None,
    }
    source = doc["urls"][1]
    assert (source["packagetype"], source["python_version"]) == ("sdist", "source")
    assert (source["size"], source["upload_time"], source["upload_time_iso_8601"]) == (
        None,
        None,
        None,
    )
    assert source["requires_python"] == ">=3.9"
    assert source["core-metadata"] is False


async def test_a_release_document_and_its_404s(world: World) -> None:
    for version in ("1.0", "1.1"):
        name, data = wheel("acme_core", version)
        put(world.platform, "acme-core", name, data, upload_time=UPLOADED)
    async with world.client() as client:
        release = (await client.get("/pypi/acme-core/1.0/json", auth=ALL)).json()
        assert list(release) == ["info", "urls", "vulnerabilities"]  # no releases, as PyPI
        assert release["info"]["version"] == "1.0"
        assert [f["filename"] for f in release["urls"]] == ["acme_core-1.0-py3-none-any.whl"]
        same = await client.get("/pypi/acme-core/1.0.0/json", auth=ALL)  # PEP 440: 1.0.0 is 1.0
        assert same.json()["info"]["version"] == "1.0"
        # any spelling of the name is answered in place (Dependabot asks with its own)
        await world.built.metadata.tasks.settled()  # the page advertises what it will
        spelled = await client.get("/pypi/Acme_Core/json", auth=ALL)
        assert spelled.status_code == 200
        assert spelled.content == (await client.get("/pypi/acme-core/json", auth=ALL)).content
        missing = await client.get("/pypi/acme-core/2.0/json", auth=ALL)
        assert (missing.status_code, missing.text) == (
            404,
            "no readable source offers acme-core 2.0\n",
        )
        nothing = await client.get("/pypi/nothing/json", auth=ALL)
        assert nothing.status_code == 404
        assert nothing.text.count("\n") == 1 and "nothing" in nothing.text
        bad = await client.get("/pypi/-bad-/json", auth=ALL)
        assert (bad.status_code, bad.text) == (400, "not a valid project name: '-bad-'\n")


async def test_a_release_without_a_wheel_has_null_info_fields(world: World) -> None:
    put(world.platform, "acme-core", "acme_core-1.0.tar.gz", b"sdist", requires_python=">=3.8")
    async with world.client() as client:
        info = (await client.get("/pypi/acme-core/json", auth=ALL)).json()["info"]
    assert (info["name"], info["version"]) == ("acme-core", "1.0")
    assert info["requires_python"] == ">=3.8"  # from the file, as the simple page has it
    for field in ("summary", "requires_dist", "project_urls", "home_page", "license", "author"):
        assert info[field] is None


def test_the_version_is_the_one_a_resolver_would_pick() -> None:
    def files(*yanked: bool) -> list[DistFile]:
        return [DistFile("x", "0" * 64, "s", "u", yanked=y) for y in yanked]

    assert newest({"1.0": files(False), "1.1": files(False), "2.0b1": files(False)}) == "1.1"
    assert newest({"1.0": files(False), "1.1": files(True, True)}) == "1.0"
    assert newest({"1.0": files(False), "1.1": files(True, False)}) == "1.1"  # one not yanked
    assert newest({"1.0": files(True), "2.0b1": files(False)}) == "2.0b1"  # pre-release only
    assert newest({"1.0": files(True), "1.1": files("held")}) == "1.1"  # all yanked: highest
    assert newest({}) is None


async def test_a_reader_sees_only_what_its_sources_offer(world: World) -> None:
    name, data = wheel("acme_core", "1.0")
    put(world.platform, "acme-core", name, data)
    secret_name, secret = wheel("acme_core", "2.0", METADATA.format(version="2.0") + "secret\n")
    put(world.secret, "acme-core", secret_name, secret)
    put(world.secret, "hidden", "hidden-1.0.tar.gz", b"hidden")
    async with world.client() as client:
        assert (await client.get("/pypi/acme-core/json")).status_code == 401  # no credentials
        everything = (await client.get("/pypi/acme-core/json", auth=ALL)).json()
        assert list(everything["releases"]) == ["1.0", "2.0"]
        assert everything["info"]["version"] == "2.0"
        mine = await client.get("/pypi/acme-core/json", auth=READER)
        assert list(mine.json()["releases"]) == ["1.0"]
        assert mine.json()["info"]["version"] == "1.0"
        assert b"secret" not in mine.content
        unseen = await client.get("/pypi/acme-core/2.0/json", auth=READER)
        assert (unseen.status_code, unseen.text) == (
            404,
            "no readable source offers acme-core 2.0\n",
        )
        hidden = await client.get("/pypi/hidden/json", auth=READER)
        assert hidden.status_code == 404
        assert b"hidden-1.0" not in hidden.content
        # what the memo keeps for one reader is not answered to another
        again = (await client.get("/pypi/acme-core/json", auth=ALL)).json()
        assert list(again["releases"]) == ["1.0", "2.0"]


async def test_held_files_appear_as_on_the_simple_page(tmp_path: Path) -> None:
    world = World(tmp_path, settings=policy({"min_age": "1d"}))
    for version, age in (("1.0", timedelta(days=30)), ("1.1", timedelta(hours=1))):
        name, data = wheel("lib", version)
        put(world.public, "lib", name, data, upload_time=NOW - age)
    async with world.client() as client:
        doc = (await client.get("/pypi/lib/json", auth=ALL)).json()
        held = (await client.get("/pypi/lib/1.1/json", auth=ALL)).json()
    await world.close()
    assert doc["info"]["version"] == "1.0"  # resolvers pass the held release by
    (entry,) = doc["releases"]["1.1"]
    assert entry["yanked"] is True
    assert entry["yanked_reason"].startswith('held by [policy] min_age = "1d"')
    assert held["info"]["yanked"] is True
    assert held["info"]["yanked_reason"] == entry["yanked_reason"]
    # its METADATA is not read through the JSON API: the file's own URL refuses it
    assert held["info"]["summary"] is None
    assert "lib-1.1-py3-none-any.whl" not in world.public.ranged

    hiding = World(tmp_path / "hide", settings=policy({"min_age": "1d", "held": "hide"}))
    for version, age in (("1.0", timedelta(days=30)), ("1.1", timedelta(hours=1))):
        name, data = wheel("lib", version)
        put(hiding.public, "lib", name, data, upload_time=NOW - age)
    async with hiding.client() as client:
        doc = (await client.get("/pypi/lib/json", auth=ALL)).json()
        gone = await client.get("/pypi/lib/1.1/json", auth=ALL)
    await hiding.close()
    assert list(doc["releases"]) == ["1.0"]
    assert (gone.status_code, gone.text) == (404, "no readable source offers lib 1.1\n")


async def test_vulnerable_releases_are_yanked_and_list_their_advisories(tmp_path: Path) -> None:
    found = advisory(
        "GHSA-aaaa-bbbb-cccc",
        "lib",
        ranges=[ecosystem_range(("introduced", "0"), ("fixed", "1.1"))],
        aliases=["CVE-2024-0001"],
        summary="Remote code execution in lib",
    )
    advisories = Advisories(write_export(tmp_path / "osv.zip", [found]))
    await advisories.load()
    world = World(tmp_path, advisories=advisories)
    for version in ("1.0", "1.1"):
        name, data = wheel("lib", version)
        put(world.public, "lib", name, data)
    async with world.client() as client:
        doc = (await client.get("/pypi/lib/json", auth=ALL)).json()
        old = (await client.get("/pypi/lib/1.0/json", auth=ALL)).json()
    await world.close()
    assert doc["info"]["version"] == "1.1"
    assert doc["vulnerabilities"] == []
    (entry,) = doc["releases"]["1.0"]
    assert (entry["yanked"], entry["yanked_reason"]) == (
        True,
        "GHSA-aaaa-bbbb-cccc (CVE-2024-0001)",
    )
    assert old["vulnerabilities"] == [
        {
            "aliases": ["CVE-2024-0001"],
            "details": None,
            "summary": "Remote code execution in lib",
            "fixed_in": ["1.1"],
            "id": "GHSA-aaaa-bbbb-cccc",
            "link": "https://osv.dev/vulnerability/GHSA-aaaa-bbbb-cccc",
            "source": "osv",
            "withdrawn": None,
        }
    ]

    hiding = World(
        tmp_path / "hide", settings=policy({"vulnerable": "hide"}), advisories=advisories
    )
    for version in ("1.0", "1.1"):
        name, data = wheel("lib", version)
        put(hiding.public, "lib", name, data)
    async with hiding.client() as client:
        doc = (await client.get("/pypi/lib/json", auth=ALL)).json()
        gone = await client.get("/pypi/lib/1.0/json", auth=ALL)
    await hiding.close()
    assert list(doc["releases"]) == ["1.1"]
    assert gone.status_code == 404


async def test_etag_gzip_and_head_as_the_simple_pages(world: World) -> None:
    for version in range(20):  # a document worth a gzip copy
        put(world.platform, "acme-core", f"acme_core-1.{version}.tar.gz", bytes([version]))
    async with world.client() as client:
        first = await client.get("/pypi/acme-core/json", auth=ALL)
        etag = first.headers["etag"]
        assert first.headers["vary"] == "Accept, Accept-Encoding"
        again = await client.get("/pypi/acme-core/json", auth=ALL, headers={"If-None-Match": etag})
        assert (again.status_code, again.content) == (304, b"")
        zipped = await client.get(
            "/pypi/acme-core/json", auth=ALL, headers={"Accept-Encoding": "gzip"}
        )
        assert zipped.headers["content-encoding"] == "gzip"
        assert int(zipped.headers["content-length"]) < len(first.content)
        assert zipped.content == first.content  # as httpx decompressed it
        plain = await client.get(
            "/pypi/acme-core/json", auth=ALL, headers={"Accept-Encoding": "identity"}
        )
        assert "content-encoding" not in plain.headers
        head = await client.head(
            "/pypi/acme-core/json", auth=ALL, headers={"Accept-Encoding": "identity"}
        )
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == str(len(plain.content))
        assert head.headers["etag"] == etag
        pages = world.platform.page_calls
        await client.get("/pypi/acme-core/json", auth=ALL)
        assert world.platform.page_calls == pages  # from the memo


async def test_metadata_is_read_for_one_release_of_a_long_history(world: World) -> None:
    versions = [f"1.{n}" for n in range(2000)]
    for version in versions:  # never read but the newest few: their bytes need not be wheels
        put(world.platform, "acme-core", f"acme_core-{version}-py3-none-any.whl", version.encode())
    name, data = wheel("acme_core", "2.0")
    put(world.platform, "acme-core", name, data)
    async with world.client() as client:
        doc = (await client.get("/pypi/acme-core/json", auth=ALL)).json()
        older = (await client.get("/pypi/acme-core/1.5/json", auth=ALL)).json()
    await world.built.metadata.tasks.settled()
    assert len(doc["releases"]) == 2001
    assert doc["info"]["summary"] == "The core of Acme"
    assert older["info"]["summary"] is None  # its bytes are no wheel: no METADATA
    # the document's release, the one asked, and the newest few the simple page reads ahead
    read = set(world.platform.ranged)
    assert {name, "acme_core-1.5-py3-none-any.whl"} <= read
    assert len(read) <= 6
