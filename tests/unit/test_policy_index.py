"""The guard in the index (gitlab_pypi_proxy.index.policy): cooldown, advisories, quarantine, name
rules."""

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gitlab_pypi_proxy.errors import NotFound
from gitlab_pypi_proxy.index.policy import Guarded, judge
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.policy import rules
from gitlab_pypi_proxy.policy.advisories import Advisories
from tests.osv_export import advisory, write_export
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed

NOW = datetime.now(UTC)
SHA = {v: f"{i:x}" * 64 for i, v in enumerate(["1.0", "1.1", "2.0"], start=1)}


def _policy(policy: dict[str, object], sources: list[dict[str, object]] | None = None):
    def error(key: str, message: str) -> Exception:
        return ValueError(f"{key}: {message}")

    raw = sources or [{"name": "private", "gitlab_project": "x"}, {"name": "public", "url": "u"}]
    return rules.parse(
        policy, raw, {}, base=Path("/"), cache_directory=Path("/c"), error=error
    ).policy


def _public(ages: dict[str, timedelta | None]) -> FakeSource:
    source = FakeSource("public")
    for version, age in ages.items():
        file = source.add("lib", f"lib-{version}-py3-none-any.whl", SHA[version])
        source.pages["lib"][-1] = replace(file, upload_time=None if age is None else NOW - age)
    return source


async def test_held_files_are_listed_yanked_with_the_rule_and_their_url_refuses_them(
    tmp_path: Path,
) -> None:
    public = _public({"1.0": timedelta(days=30), "1.1": timedelta(hours=1)})
    built = composed(tmp_path, [], [public], policy=_policy({"min_age": "1d"}))
    page = await built.index.project_page("lib")
    assert [f.filename for f in page.files] == [
        "lib-1.0-py3-none-any.whl",
        "lib-1.1-py3-none-any.whl",
    ]
    kept, held = page.files
    assert kept.yanked is False
    assert isinstance(held.yanked, str)
    assert held.yanked.startswith('held by [policy] min_age = "1d": uploaded ')
    assert page.held_versions == {"1.1"}
    # the page is not kept past the moment the held file becomes available
    assert page.fresh_until <= (NOW - timedelta(hours=1) + timedelta(days=1)).timestamp()
    await built.index.check_file(SHA["1.0"], "lib-1.0-py3-none-any.whl")
    with pytest.raises(NotFound, match=r'held by \[policy\] min_age = "1d".*available from'):
        await built.index.check_file(SHA["1.1"], "lib-1.1-py3-none-any.whl")
    with pytest.raises(NotFound, match="held by"):  # its sidecars too
        await built.index.check_file(SHA["1.1"], "lib-1.1-py3-none-any.whl.metadata")


async def test_held_hide_leaves_held_files_out_of_the_page(tmp_path: Path) -> None:
    public = _public({"1.0": timedelta(days=30), "1.1": timedelta(hours=1)})
    policy = _policy({"min_age": "1d", "held": "hide"})
    built = composed(tmp_path, [], [public], policy=policy)
    page = await built.index.project_page("lib")
    assert [f.filename for f in page.files] == ["lib-1.0-py3-none-any.whl"]
    assert page.files[0].yanked is False
    with pytest.raises(NotFound, match="held by"):
        await built.index.check_file(SHA["1.1"], "lib-1.1-py3-none-any.whl")


async def test_a_held_vulnerable_file_gives_both_reasons(tmp_path: Path) -> None:
    public = _public({"1.0": timedelta(days=30), "1.1": timedelta(hours=1)})
    found = advisory("GHSA-aaaa-bbbb-cccc", "lib", versions=["1.1"])
    advisories = Advisories(write_export(tmp_path / "osv.zip", [found]))
    await advisories.load()
    policy = _policy({"min_age": "1d"})
    page = await composed(
        tmp_path, [], [public], policy=policy, advisories=advisories
    ).index.project_page("lib")
    yanked = page.files[1].yanked
    assert isinstance(yanked, str)
    assert yanked.startswith("held by [policy] min_age") and yanked.endswith(
        "; GHSA-aaaa-bbbb-cccc"
    )


async def test_exempt_files_and_files_of_unknown_age_are_served(tmp_path: Path) -> None:
    public = _public({"1.0": None, "1.1": timedelta(hours=1)})
    policy = _policy({"min_age": "1d", "exempt": ["lib==1.1"]})
    page = await composed(tmp_path, [], [public], policy=policy).index.project_page("lib")
    assert len(page.files) == 2
    assert [f.yanked for f in page.files] == [False, False], page.files
    strict = _policy({"min_age": "1d", "unknown_age": "hold"})
    page = await composed(tmp_path / "b", [], [public], policy=strict).index.project_page("lib")
    assert [str(f.yanked).split(" =")[0] for f in page.files] == [
        "held by [policy] unknown_age",
        "held by [policy] min_age",
    ]
    assert page.held_versions == {"1.0", "1.1"}


async def test_vulnerable_versions_are_yanked_with_their_ids_or_hidden(tmp_path: Path) -> None:
    public = _public({"1.0": timedelta(days=30), "1.1": timedelta(days=30)})
    found = advisory("GHSA-xxxx-yyyy-zzzz", "lib", versions=["1.0"], aliases=["CVE-2025-1"])
    advisories = Advisories(write_export(tmp_path / "osv.zip", [found]))
    await advisories.load()
    built = composed(tmp_path, [], [public], policy=_policy({}), advisories=advisories)
    page = await built.index.project_page("lib")
    assert [f.yanked for f in page.files] == ["GHSA-xxxx-yyyy-zzzz (CVE-2025-1)", False]
    hide = _policy({"vulnerable": "hide"})
    hidden = composed(tmp_path / "b", [], [public], policy=hide, advisories=advisories)
    assert [f.filename for f in (await hidden.index.project_page("lib")).files] == [
        "lib-1.1-py3-none-any.whl"
    ]
    off = composed(tmp_path / "c", [], [public], policy=_policy({"vulnerable": "off"}))
    assert all(f.yanked is False for f in (await off.index.project_page("lib")).files)


async def test_a_bad_export_on_reload_keeps_the_advisories_in_force(tmp_path: Path) -> None:
    path = write_export(tmp_path / "osv.zip", [advisory("GHSA-1", "lib", versions=["1.0"])])
    advisories = Advisories(path)
    await advisories.load()
    path.write_bytes(b"garbage")
    assert not await advisories.reload()
    assert advisories.index.reason("lib", "1.0") == "GHSA-1"


async def test_an_excluded_name_is_a_404_naming_the_rule_and_never_asked(tmp_path: Path) -> None:
    public = FakeSource("public")
    public.add("acme-secret", "acme_secret-1.0-py3-none-any.whl", SHA["1.0"])
    policy = _policy(
        {},
        [
            {"name": "private", "gitlab_project": "x"},
            {"name": "public", "url": "u", "exclude": ["acme-*"]},
        ],
    )
    built = composed(tmp_path, [FakeSource("private")], [public], policy=policy)
    with pytest.raises(NotFound, match="its exclude has 'acme-\\*'"):
        await built.index.project_page("acme-secret")
    with pytest.raises(NotFound, match="its exclude has"):
        await built.index.check_file(SHA["1.0"], "acme_secret-1.0-py3-none-any.whl")
    assert public.page_calls == 0


async def test_a_name_outside_a_private_sources_include_is_not_its_own(tmp_path: Path) -> None:
    private, public = FakeSource("private"), FakeSource("public")
    private.add("requests", "requests-1.0-py3-none-any.whl", SHA["1.0"])
    public.add("requests", "requests-2.0-py3-none-any.whl", SHA["2.0"])
    policy = _policy(
        {},
        [{"name": "private", "gitlab_project": "x", "include": ["acme-*"]}, {"name": "public"}],
    )
    page = await composed(tmp_path, [private], [public], policy=policy).index.project_page(
        "requests"
    )
    assert page.sources == ("public",)


def test_a_quarantined_project_lists_no_files() -> None:
    file = DistFile("lib-1.0.tar.gz", SHA["1.0"], "public", "u")
    page = ProjectPage("lib", (file,), ("public",), status="quarantined", fresh_until=time.time())
    judged = judge(page, _policy({}), Advisories(None), NOW)
    assert judged.page.files == () and judged.page.status == "quarantined"


def test_the_guard_looks_up_pages_for_files_only_when_it_can_refuse_one() -> None:
    assert not Guarded(None, _policy({}), Advisories(None), None, frozenset()).holds  # type: ignore[arg-type]
    assert Guarded(None, _policy({"min_age": "7d"}), Advisories(None), None, frozenset()).holds  # type: ignore[arg-type]


def test_the_trail_names_passthrough_callers_by_a_hash_of_their_token() -> None:
    import base64
    import hashlib

    from starlette.requests import Request

    from gitlab_pypi_proxy.auth import ANONYMOUS, Identity
    from gitlab_pypi_proxy.http.audit import who

    token = "glpat-very-secret"
    header = b"Basic " + base64.b64encode(f"ci:{token}".encode())
    passthrough = Identity(None, frozenset(), frozenset(), None, passthrough=True)
    scope = {"type": "http", "headers": [(b"authorization", header)], "identity": passthrough}
    label = who(Request(scope))
    assert label == "gitlab:" + hashlib.sha256(token.encode()).hexdigest()[:12]
    assert who(Request({**scope, "identity": ANONYMOUS})) == "anonymous"
    user = Identity("alice", None, frozenset(), None)
    assert who(Request({**scope, "identity": user})) == "alice"


async def test_the_status_page_shows_the_policy_and_what_it_did(tmp_path: Path) -> None:
    from gitlab_pypi_proxy.http.policy_status import policy_rows

    path = write_export(tmp_path / "osv.zip", [advisory("GHSA-1", "lib", versions=["1.0"])])
    advisories = Advisories(path)
    await advisories.load()
    policy = _policy(
        {"min_age": "7d", "exempt": ["certifi"]},
        [{"name": "public", "url": "u", "exclude": ["acme-*"]}],
    )
    rows = policy_rows(policy, advisories, {"held": 3, "yanked": 2, "refused": 1})
    assert rows["Cooldown (min_age)"] == (
        "1w on public; files of unknown age: allow; held files listed as yanked"
    )
    assert rows["Exempt"] == "certifi"
    assert rows["Names from public"] == "never acme-*"
    assert rows["Vulnerabilities"].startswith("yank: 1 advisories on 1 projects")
    assert (rows["Files held back (listings)"], rows["File requests refused"]) == ("3", "1")
    off = policy_rows(_policy({}), Advisories(None), {})
    assert off["Cooldown (min_age)"] == "off"
    assert off["Vulnerabilities"] == "no OSV export configured"


async def test_an_upstream_yank_reason_is_kept_beside_the_advisories(tmp_path: Path) -> None:
    file = DistFile("lib-1.0.tar.gz", SHA["1.0"], "public", "u", yanked="broken build")
    page = ProjectPage("lib", (file,), ("public",), fresh_until=time.time())
    path = write_export(tmp_path / "osv.zip", [advisory("GHSA-1", "lib", versions=["1.0"])])
    advisories = Advisories(path)
    await advisories.load()
    judged = judge(page, _policy({}), advisories, NOW)
    assert judged.page.files[0].yanked == "broken build; GHSA-1"
