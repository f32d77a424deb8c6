"""The guard in the index (gitlab_pypi_proxy.index.guarded): cooldown, advisories, quarantine, name
rules."""

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.errors import NotFound
from gitlab_pypi_proxy.index.guarded import Guarded, judge
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.policy import rules
from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.storage.stores import Stores
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


async def test_a_file_s_checks_read_its_page_once_until_its_project_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client reads a wheel by ranges, a few requests each checked: the page of thousands of
    files behind them is read once while fresh, and again once its project's pages change."""
    public = _public({"1.0": timedelta(days=30), "1.1": timedelta(hours=1)})
    stores = Stores.local(tmp_path, 2**30)
    built = composed(tmp_path, [], [public], policy=_policy({"min_age": "1d"}), stores=stores)
    await built.index.project_page("lib")
    reads: list[object] = []
    get = stores.pages.get

    async def counted(key: object) -> object:
        reads.append(key)
        return await get(key)  # type: ignore[arg-type]

    monkeypatch.setattr(stores.pages, "get", counted)
    for _ in range(3):
        await built.index.check_file(SHA["1.0"], "lib-1.0-py3-none-any.whl")
        with pytest.raises(NotFound, match="held by"):
            await built.index.check_file(SHA["1.1"], "lib-1.1-py3-none-any.whl.metadata")
    pages_read = [k for k in reads if k == ("page", "public", "lib")]
    assert len(pages_read) == 2  # once for each file, not once per request
    await stores.coordinator.changed("lib")  # its GitLab files' upload details arrived
    await built.index.check_file(SHA["1.0"], "lib-1.0-py3-none-any.whl")
    assert len([k for k in reads if k == ("page", "public", "lib")]) == 3


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
    from gitlab_pypi_proxy.http.audit_lines import who

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
    # these counters start again at zero on a restart: the page says so
    assert (rows["Files held back (listings)"], rows["File requests refused"]) == (
        "3 since start",
        "1 since start",
    )
    assert rows["Malicious packages (OSV MAL- ids)"].startswith("blocked: never served")
    off = policy_rows(_policy({}), Advisories(None), {})
    assert off["Cooldown (min_age)"] == "off"
    assert off["Vulnerabilities"] == "no OSV export configured"


def test_the_status_page_counts_what_each_deny_rule_refused() -> None:
    from gitlab_pypi_proxy.http.policy_status import policy_rows

    policy = _policy({"deny": ["lib==1.1", "*-win_amd64.whl"], "malicious": "yank"})
    by_rule = {"lib==1.1": 4, "malicious": 2, "min_age": 1}
    rows = policy_rows(policy, Advisories(None), {"refused": 7}, by_rule)
    assert rows["Deny lib==1.1"] == "4 file requests refused since start"
    assert rows["Deny *-win_amd64.whl"] == "0 file requests refused since start"
    assert rows["Malicious packages (OSV MAL- ids)"] == "yanked like other advisories"
    assert rows["Refused by rule"] == "malicious: 2, min_age: 1 since start"


async def test_an_upstream_yank_reason_is_kept_beside_the_advisories(tmp_path: Path) -> None:
    file = DistFile("lib-1.0.tar.gz", SHA["1.0"], "public", "u", yanked="broken build")
    page = ProjectPage("lib", (file,), ("public",), fresh_until=time.time())
    path = write_export(tmp_path / "osv.zip", [advisory("GHSA-1", "lib", versions=["1.0"])])
    advisories = Advisories(path)
    await advisories.load()
    judged = judge(page, _policy({}), advisories, NOW)
    assert judged.page.files[0].yanked == "broken build; GHSA-1"


def _releases(versions: list[str], extra: tuple[str, ...] = ()) -> tuple[FakeSource, dict]:
    """A public `lib` with one wheel per version (and `extra` file names), each its digest."""
    source = FakeSource("public")
    digests = {}
    for n, filename in enumerate([f"lib-{v}-py3-none-any.whl" for v in versions] + list(extra)):
        digests[filename] = f"{n + 10:x}".rjust(64, "a")
        file = source.add("lib", filename, digests[filename])
        source.pages["lib"][-1] = replace(file, upload_time=NOW - timedelta(days=30))
    return source, digests


async def test_a_denied_release_is_listed_as_held_and_refused_on_every_route(
    tmp_path: Path,
) -> None:
    public, sha = _releases(["1.0", "1.1.0", "2.0.5rc1"], ("lib-1.0-cp312-cp312-win_amd64.whl",))
    policy = _policy({"deny": ["LIB==1.1", "lib>=2,<2.1", "*-win_amd64.whl"]})
    built = composed(tmp_path, [], [public], policy=policy)
    page = await built.index.project_page("lib")
    await built.tasks.settled()  # where the page's files are, remembered in the background
    reasons = {f.filename: f.yanked for f in page.files}
    assert reasons == {
        "lib-1.0-py3-none-any.whl": False,
        "lib-1.1.0-py3-none-any.whl": "denied by [policy] deny rule 'LIB==1.1'",
        "lib-2.0.5rc1-py3-none-any.whl": "denied by [policy] deny rule 'lib>=2,<2.1'",
        "lib-1.0-cp312-cp312-win_amd64.whl": "denied by [policy] deny rule '*-win_amd64.whl'",
    }
    assert page.held_versions == {"1.1.0", "2.0.5rc1"}  # 1.0 has a wheel served
    await built.index.check_file(sha["lib-1.0-py3-none-any.whl"], "lib-1.0-py3-none-any.whl")
    denied = "lib-1.1.0-py3-none-any.whl"
    before = metrics.registry().get_sample_value(
        metrics.PREFIX + "policy_refusals_total", {"rule": "LIB==1.1"}
    )
    refused = r"^lib-1\.1\.0-py3-none-any\.whl is denied by \[policy\] deny rule 'LIB==1\.1'$"
    for name in (denied, f"{denied}.metadata", f"{denied}.provenance"):
        with pytest.raises(NotFound, match=refused):
            await built.index.check_file(sha[denied], name)
    # another spelling of the URL does not reach the denied digest's bytes either
    with pytest.raises(NotFound, match=r"LIB==1\.1"):
        await built.index.check_file(sha[denied], "lib-9.9-py3-none-any.whl")
    after = metrics.registry().get_sample_value(
        metrics.PREFIX + "policy_refusals_total", {"rule": "LIB==1.1"}
    )
    assert after == (before or 0) + 4
    hide = _policy({"deny": ["lib==1.1"], "held": "hide"})
    hidden = await composed(tmp_path / "b", [], [public], policy=hide).index.project_page("lib")
    assert "lib-1.1.0-py3-none-any.whl" not in {f.filename for f in hidden.files}


async def test_a_malicious_version_is_blocked_unless_malicious_is_yank(tmp_path: Path) -> None:
    public, sha = _releases(["1.0", "2.0"])
    documents = [
        advisory("MAL-2025-7", "lib", versions=["2.0"]),
        advisory("GHSA-mmmm-aaaa-llll", "lib", versions=["2.0"], aliases=["MAL-2025-8"]),
        advisory("GHSA-pppp-qqqq-rrrr", "lib", versions=["1.0"]),
    ]
    advisories = Advisories(write_export(tmp_path / "osv.zip", documents))
    await advisories.load()
    # blocked whatever `vulnerable` says: a yank alone lets an exact pin install it
    policy = _policy({"vulnerable": "off"})
    built = composed(tmp_path, [], [public], policy=policy, advisories=advisories)
    page = await built.index.project_page("lib")
    assert [f.yanked for f in page.files] == [
        False,
        "blocked: MAL-2025-7, MAL-2025-8 reports a malicious package "
        '([policy] malicious = "block")',
    ]
    await built.index.check_file(sha["lib-1.0-py3-none-any.whl"], "lib-1.0-py3-none-any.whl")
    for name in ("lib-2.0-py3-none-any.whl", "lib-2.0-py3-none-any.whl.metadata"):
        with pytest.raises(NotFound, match="MAL-2025-7, MAL-2025-8 reports a malicious"):
            await built.index.check_file(sha["lib-2.0-py3-none-any.whl"], name)
    yank = _policy({"malicious": "yank"})
    kept = composed(tmp_path / "b", [], [public], policy=yank, advisories=advisories)
    page = await kept.index.project_page("lib")
    assert page.files[1].yanked == "GHSA-mmmm-aaaa-llll (MAL-2025-8); MAL-2025-7"
    await kept.index.check_file(sha["lib-2.0-py3-none-any.whl"], "lib-2.0-py3-none-any.whl")
