"""gitlab_pypi_proxy.policy.osv: an OSV export → which advisories affect name==version."""

import json
import random
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from gitlab_pypi_proxy.policy import osv
from tests import zip_bombs
from tests.osv_export import advisory, ecosystem_range, write_export


def _index(tmp_path: Path, *documents: dict, raw: dict[str, bytes] | None = None):
    return osv.load(write_export(tmp_path / "all.zip", documents, raw))


def test_introduced_and_fixed_bound_the_affected_versions(tmp_path: Path) -> None:
    index = _index(
        tmp_path,
        advisory(
            "GHSA-aaaa",
            "requests",
            ranges=[ecosystem_range(("introduced", "2.1"), ("fixed", "2.3.1"))],
        ),
    )
    assert index.reason("requests", "2.0.9") is None
    assert index.reason("requests", "2.1") == "GHSA-aaaa"
    assert index.reason("requests", "2.3.1rc1") == "GHSA-aaaa"  # a pre-release sorts before
    assert index.reason("requests", "2.3.1") is None
    assert index.reason("requests", "3") is None


def test_last_affected_is_itself_affected_and_introduced_zero_is_the_beginning(
    tmp_path: Path,
) -> None:
    index = _index(
        tmp_path,
        advisory(
            "PYSEC-2024-1",
            "pkg",
            ranges=[ecosystem_range(("introduced", "0"), ("last_affected", "1.4"))],
        ),
    )
    assert index.reason("pkg", "0.0.1.dev0") == "PYSEC-2024-1"
    assert index.reason("pkg", "1.4.0") == "PYSEC-2024-1"
    assert index.reason("pkg", "1.4.post1") is None  # after 1.4
    assert index.reason("pkg", "1.5") is None


def test_several_intervals_limits_and_an_unfixed_range(tmp_path: Path) -> None:
    index = _index(
        tmp_path,
        advisory(
            "GHSA-two",
            "pkg",
            ranges=[
                ecosystem_range(
                    ("introduced", "1.0"), ("fixed", "1.2"), ("introduced", "3.0"), ("fixed", "3.5")
                )
            ],
        ),
        advisory(
            "GHSA-limited",
            "other",
            ranges=[ecosystem_range(("introduced", "1.0"), ("limit", "1.5"), ("limit", "2.0"))],
        ),
        advisory("GHSA-open", "third", ranges=[ecosystem_range(("introduced", "4.0"))]),
    )
    hits = index.reasons("pkg", ["0.9", "1.0", "1.1", "1.2", "2.0", "3.0", "3.4.9", "3.5", "9"])
    assert sorted(hits) == ["1.0", "1.1", "3.0", "3.4.9"]
    assert index.reasons("other", ["0.5", "1.0", "1.9", "2.0", "7.0"]) == {
        "1.0": "GHSA-limited",
        "1.9": "GHSA-limited",
    }
    assert index.reason("third", "3.9") is None
    assert index.reason("third", "400.1") == "GHSA-open"


def test_an_event_fixed_where_it_was_introduced_affects_nothing_there(tmp_path: Path) -> None:
    index = _index(
        tmp_path,
        advisory(
            "GHSA-empty", "pkg", ranges=[ecosystem_range(("fixed", "1.0"), ("introduced", "1.0"))]
        ),
    )
    assert index.reason("pkg", "1.0") is None


def test_listed_versions_match_as_pep440_versions_and_count_without_a_range(
    tmp_path: Path,
) -> None:
    index = _index(
        tmp_path,
        advisory("MAL-2025-1", "Evil_Pkg", versions=["1.0", "2.0.0.post1", "not.a-version!"]),
    )
    assert index.reason("evil-pkg", "1.0.0") == "MAL-2025-1"  # 1.0 == 1.0.0
    assert index.reason("EVIL.pkg", "2.0.0-post1") == "MAL-2025-1"
    assert index.reason("evil_pkg", "1.0.1") is None
    # A string that is no version matches only itself, and never breaks the page around it.
    assert index.reasons("evil-pkg", ["not.a-version!", "also bad", "1.0"]) == {
        "not.a-version!": "MAL-2025-1",
        "1.0": "MAL-2025-1",
    }


def test_a_version_that_is_no_pep440_version_is_outside_every_range(tmp_path: Path) -> None:
    index = _index(
        tmp_path, advisory("GHSA-all", "pkg", ranges=[ecosystem_range(("introduced", "0"))])
    )
    assert index.reasons("pkg", ["weird version", "0.1"]) == {"0.1": "GHSA-all"}


def test_semver_ranges_are_evaluated_git_ranges_ignored(tmp_path: Path) -> None:
    git = {"type": "GIT", "repo": "https://example.invalid/r", "events": [{"introduced": "a1b2"}]}
    index = _index(
        tmp_path,
        advisory(
            "GHSA-semver",
            "pkg",
            ranges=[
                ecosystem_range(("introduced", "1.0.0-beta.1"), ("fixed", "1.0.0"), kind="SEMVER")
            ],
        ),
        advisory("GHSA-git", "gitpkg", ranges=[git]),
    )
    assert index.reason("pkg", "1.0.0b2") == "GHSA-semver"
    assert index.reason("pkg", "1.0.0") is None
    assert index.reason("gitpkg", "1.0") is None
    assert index.stats.ignored_ranges == 1


def test_withdrawn_advisories_and_other_ecosystems_are_ignored(tmp_path: Path) -> None:
    everything = [ecosystem_range(("introduced", "0"))]
    index = _index(
        tmp_path,
        advisory("GHSA-gone", "pkg", ranges=everything, withdrawn="2025-02-01T00:00:00Z"),
        advisory("GHSA-npm", "pkg", ranges=everything, ecosystem="npm"),
    )
    assert index.reason("pkg", "1.0") is None
    assert index.stats.withdrawn == 1
    assert index.stats.advisories == 0


def test_a_range_with_an_unparsable_event_is_ignored_the_others_still_count(
    tmp_path: Path,
) -> None:
    index = _index(
        tmp_path,
        advisory(
            "GHSA-mixed",
            "pkg",
            ranges=[
                ecosystem_range(("introduced", "0"), ("fixed", "not a version")),
                ecosystem_range(("introduced", "5.0")),
            ],
        ),
    )
    assert index.stats.unparsable_ranges == 1
    assert index.reason("pkg", "1.0") is None  # never guessed from the broken range
    assert index.reason("pkg", "5.1") == "GHSA-mixed"


def test_reason_names_ids_and_aliases_and_merges_advisories_that_alias_each_other(
    tmp_path: Path,
) -> None:
    everything = [ecosystem_range(("introduced", "0"))]
    index = _index(
        tmp_path,
        advisory("PYSEC-2021-9", "pkg", ranges=everything, aliases=["CVE-2021-1", "GHSA-bbbb"]),
        advisory("GHSA-bbbb", "pkg", ranges=everything, aliases=["CVE-2021-1"]),
        advisory("GHSA-aaaa", "pkg", ranges=everything, aliases=["CVE-2020-7"]),
        advisory("MAL-2025-3", "pkg", ranges=everything),
    )
    assert index.reason("pkg", "1.0") == (
        "GHSA-aaaa (CVE-2020-7); GHSA-bbbb (CVE-2021-1, PYSEC-2021-9); MAL-2025-3"
    )
    assert [a.id for a in index.advisories("pkg", "1.0")] == [
        "PYSEC-2021-9",
        "GHSA-bbbb",
        "GHSA-aaaa",
        "MAL-2025-3",
    ]


def test_a_long_reason_stops_after_a_few_advisories() -> None:
    many = [osv.Advisory(f"GHSA-{i:04d}") for i in range(12)]
    assert osv.reason(many, most=3) == "GHSA-0000; GHSA-0001; GHSA-0002; and 9 more"


def _corrupt(path: Path, member: str) -> None:
    """Flip bytes in the middle of one member's compressed data."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    start = header + 30 + name_len + extra_len
    for i in range(start + 2, start + info.compress_size - 2):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_bad_members_are_skipped_and_counted_the_rest_is_read(tmp_path: Path) -> None:
    everything = [ecosystem_range(("introduced", "0"))]
    good = advisory("GHSA-good", "pkg", ranges=everything)
    broken = advisory("GHSA-broken", "broken", ranges=everything)
    broken["affected"][0]["ranges"] = {"type": "ECOSYSTEM"}  # not a list
    path = write_export(
        tmp_path / "all.zip",
        [good, broken, advisory("GHSA-corrupt", "corrupt", versions=["1.0"] * 500)],
        raw={
            "not-json.json": b"{nope",
            "a-list.json": b"[1, 2]",
            "strings.json": json.dumps({"id": "X-1", "affected": ["a string"]}).encode(),
            "README.txt": b"not an advisory, not counted",
        },
    )
    _corrupt(path, "GHSA-corrupt.json")
    index = osv.load(path)
    assert index.stats.skipped_members == 5
    assert index.stats.members == 1
    assert index.reason("pkg", "1.0") == "GHSA-good"
    assert index.reason("broken", "1.0") is None
    assert index.reason("corrupt", "1.0") is None


def test_a_member_bigger_than_the_limit_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(osv, "MAX_MEMBER", 300)
    everything = [ecosystem_range(("introduced", "0"))]
    index = _index(
        tmp_path,
        advisory("GHSA-small", "small", ranges=everything),
        advisory("GHSA-huge", "huge", ranges=everything, versions=[f"1.{i}" for i in range(99)]),
    )
    assert index.stats.skipped_members == 1
    assert index.reason("small", "1") == "GHSA-small"
    assert index.reason("huge", "1") is None


def test_a_bz2_bomb_member_is_skipped_in_constant_memory(tmp_path: Path) -> None:
    """zipfile decompresses a bz2 member in one call whatever it declares: 64 MiB here."""
    bomb = zip_bombs.bz2_zeros(zip_bombs.BOMB)
    path = tmp_path / "all.zip"
    path.write_bytes(zip_bombs.archive("MAL-0000-bomb.json", bomb, zipfile.ZIP_BZIP2, 1000))
    tracemalloc.start()
    try:
        index = osv.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (index.stats.members, index.stats.skipped_members) == (0, 1)
    assert peak < 4 * 2**20


def test_a_file_that_is_no_zip_raises_one_line(tmp_path: Path) -> None:
    (tmp_path / "all.zip").write_bytes(b"PK\x03\x04 but then nothing useful")
    with pytest.raises(osv.OsvError, match=r"all\.zip: not a readable zip file") as caught:
        osv.load(tmp_path / "all.zip")
    assert "\n" not in str(caught.value)
    with pytest.raises(osv.OsvError, match="no such file"):
        osv.load(tmp_path / "missing.zip")


def _event_key(event: dict) -> tuple:
    """Sorted by version ("0" first); at one version introduced, fixed, then last_affected."""
    kind, at = next(iter(event.items()))
    order = {"introduced": 0, "fixed": 1, "last_affected": 2}[kind]
    return (at != "0" or kind != "introduced", Version(at), order)


def _reference(version: str, ranges: list[dict], listed: list[str]) -> bool:
    """OSV's IsVulnerable pseudocode, written out plainly, one version at a time."""
    v = Version(version)
    if any(Version(x) == v for x in listed):
        return True
    for r in ranges:
        limits = [e["limit"] for e in r["events"] if "limit" in e]
        if limits and not any(lim == "*" or v < Version(lim) for lim in limits):
            continue
        affected = False
        for event in sorted((e for e in r["events"] if "limit" not in e), key=_event_key):
            kind, at = next(iter(event.items()))
            if kind == "introduced" and (at == "0" or v >= Version(at)):
                affected = True
            elif (kind == "fixed" and v >= Version(at)) or (
                kind == "last_affected" and v > Version(at)
            ):
                affected = False
        if affected:
            return True
    return False


def test_a_whole_page_at_once_agrees_with_the_spec_version_by_version(tmp_path: Path) -> None:
    rng = random.Random(740)
    versions = [f"{a}.{b}" for a in range(4) for b in range(6)] + ["1.2rc1", "2.0.post1"]
    documents = []
    for i in range(60):
        events = [("introduced", rng.choice(["0", *versions]))]
        for _ in range(rng.randint(0, 4)):
            events.append(
                (rng.choice(["introduced", "fixed", "last_affected"]), rng.choice(versions))
            )
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            events.append(("limit", rng.choice(["*", *versions])))
        listed = rng.sample(versions, rng.randint(0, 3))
        documents.append(
            advisory(f"GHSA-{i:04d}", "pkg", ranges=[ecosystem_range(*events)], versions=listed)
        )
    index = _index(tmp_path, *documents)
    page = index.affected("pkg", versions)
    for version in versions:
        expected = [
            d["id"]
            for d in documents
            if _reference(version, d["affected"][0]["ranges"], d["affected"][0]["versions"])
        ]
        assert [a.id for a in page.get(version, ())] == expected, version
        assert [a.id for a in index.advisories("pkg", version)] == expected, version
    pairs = sum(len(found) for found in page.values())
    assert 0 < pairs < len(versions) * len(documents)  # the draw exercises both answers


def test_fixed_in_names_the_fixed_events_and_the_summary_is_kept_short(tmp_path: Path) -> None:
    found = advisory(
        "GHSA-fix",
        "Lib_X",
        ranges=[
            ecosystem_range(("introduced", "0"), ("fixed", "1.2"), ("introduced", "2.0")),
            ecosystem_range(("introduced", "2.0"), ("fixed", "2.0.3"), ("last_affected", "3.1")),
        ],
        summary="s" * (osv.MAX_SUMMARY + 100),
    )
    other = advisory("GHSA-other", "lib-x", ranges=[ecosystem_range(("introduced", "0"))])
    index = _index(tmp_path, found, other)
    (first, second) = index.advisories("lib-x", "1.0")
    assert first.id == "GHSA-fix" and first.summary == "s" * osv.MAX_SUMMARY
    assert index.fixed_in("LIB.X", first) == ("1.2", "2.0.3")  # not last_affected's 3.1
    assert index.fixed_in("lib-x", second) == ()
    assert second.summary is None
