"""GitLab keeps a name as it was uploaded, and its Packages API's `package_name` is a
case-insensitive substring match on that stored name in which `_` matches only `_`: the upload
times of every spelling are found, so the cooldown holds a fresh release whatever its spelling, and
a GitLab file whose upload time cannot be established under a cooldown is held (fail closed)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
import respx

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.errors import NotFound
from gitlab_pypi_proxy.policy import rules
from gitlab_pypi_proxy.sources.base import Parts
from gitlab_pypi_proxy.sources.gitlab_details import name_query
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.upstream import Upstream
from tests.servers import serve
from tests.unit.indexes import composed
from tests.unit.test_gitlab_file_details import BASE, _link, _sha
from tests.unit.test_gitlab_file_details import _source as respx_source
from tests.unit.test_gitlab_source import page

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=30)
FRESH = NOW - timedelta(minutes=1)
STORED = {11: "acme_models", 12: "Acme.Models", 13: "ACME-models"}


def _policy(source: str) -> rules.PolicySettings:
    def error(key: str, message: str) -> Exception:
        return ValueError(f"{key}: {message}")

    raw = [{"name": source, "gitlab_project": "x"}]
    settings = {"min_age": "1d", "min_age_sources": [source]}
    return rules.parse(
        settings, raw, {}, base=Path("/"), cache_directory=Path("/c"), error=error
    ).policy


@pytest.fixture(scope="module")
def gitlab() -> Iterator[str]:
    """GitLab with `acme-models` stored under another spelling in each project, an old and a
    fresh version each, beside names that contain the query but are other projects."""
    double = GitLabDouble()
    for project, stored in STORED.items():
        double.add_project(project, f"acme/p{project}", public=True)
        for version, created in (("1.0", OLD), ("1.1", FRESH)):
            filename, data = make_wheel(stored, version)
            double.add_package_file(project, stored, version, filename, data, created_at=created)
        for other in ("acme_models_extra", "models"):  # found by the query, filtered out
            filename, data = make_wheel(other, "1.1")
            double.add_package_file(project, other, "1.1", filename, data, created_at=OLD)
    with serve(double.app) as server:
        yield server.url


def test_the_listing_is_asked_with_a_part_every_spelling_contains() -> None:
    assert name_query("acme-models") == "models"
    assert name_query("acme-core") == "core"  # of parts as long, the last: not the prefix
    assert name_query("zope-interface") == "interface"
    assert name_query("requests") == "requests"


@pytest.mark.parametrize("project", sorted(STORED), ids=list(STORED.values()))
async def test_every_stored_spelling_has_upload_times_and_a_fresh_one_is_held(
    tmp_path: Path, gitlab: str, project: int
) -> None:
    async with httpx2.AsyncClient() as http:
        config = SourceConfig("ml", "gitlab_project", str(project))
        source = GitLabProject(config, GitLabConfig(url=gitlab, timeout=5), Upstream(http))
        parts = Parts(source, owns_names=True, details=source.details)
        built = composed(tmp_path, [parts], policy=_policy("ml"))
        listed = await built.index.project_page("acme-models")
        await source.details.settled()
    old, fresh = listed.files
    assert (old.upload_time, fresh.upload_time) == (OLD, FRESH)
    assert old.yanked is False
    assert isinstance(fresh.yanked, str) and fresh.yanked.startswith(
        'held by [policy] min_age = "1d": uploaded '
    )
    await built.index.check_file(old.sha256, old.filename)
    with pytest.raises(NotFound, match=r'held by \[policy\] min_age = "1d": uploaded'):
        await built.index.check_file(fresh.sha256, fresh.filename)


@respx.mock
async def test_a_gitlab_file_of_unknown_upload_time_is_held_under_a_cooldown(
    tmp_path: Path, client: httpx2.AsyncClient
) -> None:
    filename = "x-1.0-py3-none-any.whl"
    respx.get(f"{BASE}/packages/pypi/simple/x").respond(200, text=page(_link(filename, _sha(1))))
    # a token without read_api: the Packages API will not list the upload times
    respx.get(f"{BASE}/packages").respond(403, json={"error": "insufficient_scope"})
    source = respx_source(client)
    parts = Parts(source, owns_names=True, details=source.details)
    built = composed(tmp_path, [parts], policy=_policy("platform"))
    (file,) = (await built.index.project_page("x")).files
    await source.details.settled()
    assert file.upload_time is None
    reason = (
        "held by [policy] min_age = \"1d\": GitLab source 'platform' has not said when this "
        "file was uploaded"
    )
    assert isinstance(file.yanked, str) and file.yanked.startswith(reason)
    with pytest.raises(NotFound, match=r"held by \[policy\] min_age .* has not said when"):
        await built.index.check_file(_sha(1), filename)
