"""PEP 700 `versions`: a `url` source's own list passes through (a version it lists without
files stays, a file name's spelling adds none); a source that gives none (GitLab's) lists its
files' versions; merged pages list the union; the policy leaves out what it hides."""

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import respx

from gitlab_pypi_proxy.config import SourceConfig
from gitlab_pypi_proxy.http.serialize import JSON, render_page
from gitlab_pypi_proxy.index.guarded import judge
from gitlab_pypi_proxy.model import ProjectPage
from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.sources.simple_index import SimpleIndexSource
from gitlab_pypi_proxy.sources.upstream import Upstream
from tests.osv_export import advisory, write_export
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed
from tests.unit.test_policy_index import _policy

INDEX = "https://index.example.org/simple/"
SHA = {n: f"{n:x}" * 64 for n in range(1, 5)}


def _entry(filename: str, n: int) -> dict[str, object]:
    return {"filename": filename, "url": f"/f/{filename}", "hashes": {"sha256": SHA[n]}}


def _public(client: httpx2.AsyncClient, **extra: object) -> SimpleIndexSource:
    """numpy's case: 1.1 listed without files, an sdist named 1.0.post2 of version 1.0."""
    document = {
        "meta": {"api-version": "1.1"},
        "name": "demo",
        "files": [_entry("demo-1.0.tar.gz", 1), _entry("demo-1.0.post2.tar.gz", 2)],
        **extra,
    }
    respx.get(f"{INDEX}demo/").respond(
        200, headers={"content-type": JSON}, content=json.dumps(document).encode()
    )
    return SimpleIndexSource(SourceConfig("public", "url", INDEX), Upstream(client))


def _versions(page: ProjectPage) -> list[str]:
    return json.loads(render_page(page, JSON))["versions"]


@respx.mock
async def test_a_url_sources_own_versions_pass_through(client, tmp_path: Path) -> None:
    listed = ["1.0", 7, "not a version!", "1.1", "1.0", "x" * 200]
    built = composed(tmp_path, [], [_public(client, versions=listed)])
    assert _versions(await built.index.project_page("demo")) == ["1.0", "1.1"]


@respx.mock
async def test_a_source_that_lists_no_versions_lists_its_files_versions(
    client, tmp_path: Path
) -> None:
    built = composed(tmp_path, [], [_public(client)])
    assert _versions(await built.index.project_page("demo")) == ["1.0", "1.0.post2"]


@respx.mock
async def test_merged_sources_list_the_union(client, tmp_path: Path) -> None:
    private = FakeSource("private")
    private.add("demo", "demo-3.0-py3-none-any.whl", SHA[3])
    public = _public(client, versions=["1.0", "1.1"])
    # a private source owns its names: merged only where a public one may add to them
    built = composed(tmp_path, [private, public], allow_public={"demo": frozenset({"public"})})
    page = await built.index.project_page("demo")
    assert page.sources == ("private", "public")
    assert _versions(page) == ["1.0", "1.1", "3.0"]


async def test_the_policy_leaves_out_what_it_hides(tmp_path: Path) -> None:
    found = advisory("GHSA-aaaa-bbbb-cccc", "demo", versions=["1.1", "1.2"])
    advisories = Advisories(write_export(tmp_path / "osv.zip", [found]))
    await advisories.load()
    now = datetime.now(UTC)
    file = FakeSource("public").add("demo", "demo-1.0.tar.gz", SHA[1])
    page = ProjectPage("demo", (file,), ("public",), versions=("1.0", "1.2"))
    # a version with an advisory and no files: hidden with `vulnerable = "hide"`, else listed
    assert _versions(judge(page, _policy({"vulnerable": "hide"}), advisories, now).page) == ["1.0"]
    assert _versions(judge(page, _policy({}), advisories, now).page) == ["1.0", "1.2"]
    # every file of 1.0 held by the cooldown and hidden: 1.0 is not listed either
    young = replace(page, files=(replace(file, upload_time=now),))
    cooldown = _policy({"min_age": "3d", "held": "hide"})
    assert _versions(judge(young, cooldown, Advisories(None), now).page) == ["1.2"]
    quarantined = replace(page, status="quarantined")
    assert _versions(judge(quarantined, _policy({}), Advisories(None), now).page) == []
