"""The operator API (/-/...) and views through the routes: who may do what (401 without
credentials, 403 with a reason), a refresh listing what GitLab got straight from a CI job, a yank
listed on every route and kept across a restart, a purge dropping the file and its sidecars, the
cached projects, each action in the audit trail with who did it. The whole app in-process (one
for the module) in front of the GitLab double on a loopback port."""

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.index.cached import PollKey
from gitlab_pypi_proxy.policy.audit_trail import query
from tests.servers import serve
from tests.unit.asgi import running_app
from tests.waiting import async_wait_until

READER_TOKEN = "glpat-operator-reader"
DEPLOY_TOKEN = "gldt-operator-deploy"
JOB_TOKEN = "glcbt-operator-job"
OPS = ("ops", "ops-password")
CI = ("ci", "ci-password")
READER = ("reader", "reader-password")
JOB = ("gitlab-ci-token", JOB_TOKEN)
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def gitlab() -> Iterator[tuple[GitLabDouble, str]]:
    """platform (11) has acme 1.0 and shared 1.0; ml (12) has shared 2.0 and ml-lib."""
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_project(12, "acme/ml")
    double.add_token(READER_TOKEN, read={11, 12})
    double.add_token(DEPLOY_TOKEN, write={11})
    double.add_job_token(JOB_TOKEN, write={11})
    for project, name, version in [
        (11, "acme", "1.0"),
        (11, "shared", "1.0"),
        (12, "shared", "2.0"),
        (12, "ml-lib", "1.0"),
    ]:
        double.add_package_file(project, name, version, *make_wheel(name, version))
    with serve(double.app) as server:
        yield double, server.url


def _config(directory: Path, gitlab_url: str) -> Path:
    path = directory / "proxy.toml"
    path.write_text(
        f'[cache]\ndirectory = "{directory / "cache"}"\nindex_ttl = 3600\nnegative_ttl = 3600\n'
        "warm_dependencies = false\n"
        f'[gitlab]\nurl = "{gitlab_url}"\ntoken = "{READER_TOKEN}"\n'
        '[[sources]]\nname = "platform"\ngitlab_project = 11\n'
        '[[sources]]\nname = "ml"\ngitlab_project = 12\n'
        '[[views]]\nname = "release"\nsources = ["platform"]\n'
        '[auth]\nanonymous_read = false\npassthrough = true\nadmins = ["ops"]\n'
        f'[[users]]\nname = "ops"\npassword = "{OPS[1]}"\n'
        f'[[users]]\nname = "ci"\npassword = "{CI[1]}"\nupload = ["platform"]\n'
        f'gitlab_token = "{DEPLOY_TOKEN}"\n'
        f'[[users]]\nname = "reader"\npassword = "{READER[1]}"\nread = ["ml"]\n'
    )
    return path


async def _app_client(path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    async with running_app(path) as client:
        yield client


@pytest.fixture(scope="module")
def config(gitlab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _config(tmp_path_factory.mktemp("operator-api"), gitlab[1])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(config: Path) -> AsyncIterator[httpx2.AsyncClient]:
    async for client in _app_client(config):
        yield client


def _files(response: httpx2.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    return {f["filename"]: f.get("yanked", False) for f in response.json()["files"]}


async def _trail(config: Path, event: str, count: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """The trail's lines of `event` (who, project or file, notes), once it holds `count` (its
    writer is a thread of its own)."""

    def lines() -> list[tuple[str, str, tuple[str, ...]]]:
        found = query(config.parent / "cache" / "audit.jsonl").deliveries
        return [(d.identity, d.project or d.file, d.notes) for d in found if d.event == event]

    await async_wait_until(lambda: len(lines()) >= count, f"{count} {event} lines in the trail")
    return lines()


async def test_the_operator_api_needs_an_admin(client: httpx2.AsyncClient) -> None:
    anonymous = await client.get("/-/projects")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Basic realm="gitlab-pypi-proxy"'
    refused = await client.get("/-/projects", auth=READER)
    assert (refused.status_code, refused.text) == (
        403,
        "user reader may not list the cached projects: only the users in [auth] admins may\n",
    )
    for method, path in [
        ("DELETE", "/-/files/" + "a" * 64),
        ("PUT", "/-/yank/acme/1.0"),
        ("DELETE", "/-/yank/acme/1.0"),
    ]:
        answer = await client.request(method, path, auth=CI)  # may upload, no more
        assert answer.status_code == 403, (path, answer.text)
        assert "only the users in [auth] admins may" in answer.text
    assert (await client.post("/-/refresh/acme", auth=READER)).status_code == 403
    stranger = await client.post("/-/refresh/acme", auth=("gitlab-ci-token", "not-a-job-token"))
    assert stranger.status_code == 401  # GitLab's verdict on the passthrough credentials


async def test_a_refresh_lists_what_a_ci_job_published_straight_to_gitlab(
    client: httpx2.AsyncClient, gitlab, config: Path
) -> None:
    double, _ = gitlab
    assert (await client.get("/simple/acme/", auth=OPS)).status_code == 200
    # the name poll's first look at platform forgets what it finds no page kept for: once done,
    # the page is asked again and kept for an hour
    pages = client.app.state.services.stores.pages  # type: ignore[attr-defined]
    await async_wait_until(lambda: pages.get_now(PollKey("platform").raw), "platform polled")
    assert set(_files(await client.get("/simple/acme/", auth=OPS, headers=JSON))) == {
        "acme-1.0-py3-none-any.whl"
    }
    double.add_package_file(11, "acme", "2.0", *make_wheel("acme", "2.0"))  # by CI, straight
    page = await client.get("/simple/acme/", auth=OPS, headers=JSON)
    assert "acme-2.0-py3-none-any.whl" not in _files(page)  # kept for index_ttl, an hour
    refreshed = await client.post("/-/refresh/acme", auth=JOB)  # the job's own token
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json() == {
        "project": "acme",
        "sources": [  # what the job may read: platform
            {"source": "platform", "outcome": "found", "versions": ["1.0", "2.0"], "files": 2}
        ],
    }
    page = await client.get("/simple/acme/", auth=OPS, headers=JSON)
    assert "acme-2.0-py3-none-any.whl" in _files(page)
    by_ops = await client.post("/-/refresh/Acme", auth=OPS)
    assert [s["outcome"] for s in by_ops.json()["sources"]] == ["found", "not found"]
    assert (await client.post("/-/refresh/acme", auth=CI)).status_code == 200  # may upload
    identities = [who for who, _, _ in await _trail(config, "refresh", 3)]
    assert identities[0].startswith("gitlab:") and identities[1:] == ["ops", "ci"]
    assert JOB_TOKEN not in (config.parent / "cache" / "audit.jsonl").read_text()
    assert (await client.post("/-/refresh/-bad-", auth=OPS)).status_code == 400


async def test_a_yank_is_listed_everywhere_kept_across_a_restart_and_taken_back(
    client: httpx2.AsyncClient, config: Path
) -> None:
    reason = "broken build, use 1.1"
    body = json.dumps({"reason": reason})
    answer = await client.put("/-/yank/shared/1.0.0", content=body, auth=OPS)
    assert answer.status_code == 204, answer.text
    for path in ("/simple/shared/", "/release/simple/shared/"):
        listed = _files(await client.get(path, auth=OPS, headers=JSON))
        assert listed["shared-1.0-py3-none-any.whl"] == reason
        if path == "/simple/shared/":
            assert listed["shared-2.0-py3-none-any.whl"] is False
    html = await client.get("/simple/shared/", auth=OPS, headers={"Accept": "text/html"})
    assert f'data-yanked="{reason}"' in html.text
    async for restarted in _app_client(config):  # another process, the same cache directory
        listed = _files(await restarted.get("/simple/shared/", auth=OPS, headers=JSON))
        assert listed["shared-1.0-py3-none-any.whl"] == reason
    assert (await _trail(config, "yank", 1)) == [("ops", "shared", (reason,))]
    for bad in ("not json", json.dumps({"reason": 5}), json.dumps({"reason": "a\nb"})):
        refused = await client.put("/-/yank/shared/1.0", content=bad, auth=OPS)
        assert refused.status_code == 400, refused.text
    assert (await client.put("/-/yank/shared/1.0 ", auth=OPS)).status_code == 400
    assert (await client.delete("/-/yank/shared/1.0", auth=OPS)).status_code == 204
    listed = _files(await client.get("/simple/shared/", auth=OPS, headers=JSON))
    assert listed["shared-1.0-py3-none-any.whl"] is False
    assert (await _trail(config, "unyank", 1)) == [("ops", "shared", ("was yanked",))]


async def test_a_purge_drops_the_file_and_its_sidecars_and_the_next_request_fetches_it(
    client: httpx2.AsyncClient, gitlab, config: Path
) -> None:
    double, _ = gitlab
    file = next(f for f in double.files if f.name == "ml-lib")
    services = client.app.state.services  # type: ignore[attr-defined]
    assert (await client.get("/simple/ml-lib/", auth=OPS)).status_code == 200
    await services.composed.tasks.settled()  # where its files are: remembered in the background
    url = f"/files/{file.sha256}/{file.filename}"
    assert (await client.get(url, auth=OPS)).content == file.content
    metadata = await client.get(url + ".metadata", auth=OPS)
    assert metadata.status_code == 200
    assert file.sha256 in services.stores.blobs
    assert await services.composed.metadata.store.get("ml", file.sha256) is not None
    listing = (await client.get("/-/projects", auth=OPS)).json()
    ml_lib = next(p for p in listing["projects"] if p["name"] == "ml-lib")
    assert ml_lib["versions"] == ["1.0"] and ml_lib["files"] == 1
    assert ml_lib["bytes"] == len(file.content) and ml_lib["last_use"].endswith("Z")
    downloads = len(double.matching(r"/api/v4/projects/12/packages/pypi/files/.*"))

    assert (await client.delete(f"/-/files/{file.sha256}", auth=OPS)).status_code == 204
    assert file.sha256 not in services.stores.blobs
    assert await services.composed.metadata.store.get("ml", file.sha256) is None
    listing = (await client.get("/-/projects", auth=OPS)).json()
    assert "ml-lib" not in {p["name"] for p in listing["projects"]}
    again = await client.get(url, auth=OPS)
    assert (again.status_code, again.headers["x-cache"]) == (200, "MISS")
    assert len(double.matching(r"/api/v4/projects/12/packages/pypi/files/.*")) > downloads
    assert (await _trail(config, "purge", 1)) == [("ops", "ml-lib", ("was cached here",))]
    listed = await _trail(config, "projects", 2)
    assert [who for who, _, _ in listed] == ["ops", "ops"]
    assert listed[0][2][0].endswith(" projects listed")
    assert (await client.delete("/-/files/NOT-A-DIGEST", auth=OPS)).status_code == 400


async def test_a_view_serves_its_sources_to_those_who_may_read_them(
    client: httpx2.AsyncClient, gitlab
) -> None:
    double, _ = gitlab
    assert (await client.get("/release/simple/")).status_code == 401  # guarded like /simple/
    listed = _files(await client.get("/release/simple/shared/", auth=OPS, headers=JSON))
    assert set(listed) == {"shared-1.0-py3-none-any.whl"}  # not ml's 2.0
    assert (await client.get("/release/simple/ml-lib/", auth=OPS)).status_code == 404
    again = await client.get("/release/simple/shared/", auth=OPS, headers=JSON)  # a memo hit
    assert _files(again) == listed
    refused = await client.get("/release/simple/", auth=READER)  # reads ml only
    assert (refused.status_code, refused.text) == (
        403,
        "user reader may not read any source of view release\n",
    )
    ml_file = next(f for f in double.files if f.name == "ml-lib")
    outside = await client.get(f"/release/files/{ml_file.sha256}/{ml_file.filename}", auth=OPS)
    assert outside.status_code == 404
    mine = next(f for f in double.files if f.name == "shared" and f.version == "1.0")
    inside = await client.get(f"/release/files/{mine.sha256}/{mine.filename}", auth=OPS)
    assert inside.content == mine.content
    assert (await client.get("/nope/simple/", auth=OPS)).status_code == 404
    # its PyPI JSON API: the view's releases, its files' URLs under the view
    document = (await client.get("/release/pypi/shared/json", auth=OPS)).json()
    assert list(document["releases"]) == ["1.0"]
    assert document["urls"][0]["url"] == f"http://proxy/release/files/{mine.sha256}/{mine.filename}"
    assert (await client.get("/pypi/shared/json", auth=OPS)).json()["info"]["version"] == "2.0"
    assert (await client.get("/release/pypi/ml-lib/json", auth=OPS)).status_code == 404
    redirect = await client.get("/release/simple", auth=OPS)
    assert (redirect.status_code, redirect.headers["location"]) == (301, "simple/")
