"""Stored records are plain JSON with a format version, never pickles: a cache directory written
by a version that pickled its records (or holding records of another format version) is emptied
when a store opens it, without reading a record; a record that cannot be read (malformed, of
another shape) is dropped and counted, never a traceback, and fetched again. The content-addressed
files are another store's and stay."""

import contextlib
import os
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import diskcache
import pytest

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.storage.details import DetailsStore
from gitlab_pypi_proxy.storage.details import Version as Listed
from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.locations import FileLocations
from gitlab_pypi_proxy.storage.metadata_store import MetadataStore
from gitlab_pypi_proxy.storage.pages import Entry, PageStore
from gitlab_pypi_proxy.storage.provenance_store import Kept, ProvenanceStore
from gitlab_pypi_proxy.storage.record_format import BadRecord, decode, encode, encode_key
from gitlab_pypi_proxy.storage.uploads import RecentUploads, Upload
from gitlab_pypi_proxy.storage.writable import writes_for

FILE = DistFile(
    "a-1.0-py3-none-any.whl",
    "a" * 64,
    "platform",
    "https://g/a-1.0-py3-none-any.whl",
    requires_python=">=3.9",
    yanked="broken",
    size=1234,
    upload_time=datetime(2024, 1, 1, 12, 30, tzinfo=UTC),
    core_metadata_sha256="b" * 64,
    provenance="https://g/a.provenance",
)
PAGE = ProjectPage(
    "a",
    (FILE, DistFile("a-1.1.tar.gz", "c" * 64, "platform", "https://g/a-1.1.tar.gz")),
    ("platform",),
    status="archived",
    status_reason="moved",
    held_versions=frozenset({"1.1"}),
    versions=("1.0", "1.1", "2.0"),
)


RAN: list[str] = []


def _run(what: str) -> None:
    RAN.append(what)


class Detonator:
    """Unpickling it runs code: what a record read from a pickle could do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_run, ("ran",))


def _dropped(store: str) -> float:
    name = metrics.PREFIX + "dropped_records_total"
    return metrics.registry().get_sample_value(name, {"store": store}) or 0.0


def _rows(database: Path) -> list[tuple[object, int, int]]:
    """(key, key is raw, value mode) of every row of a diskcache database."""
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT key, raw, mode FROM Cache").fetchall()


def test_every_record_kind_round_trips_as_json() -> None:
    values = [
        PAGE,
        None,
        frozenset({"a", "b"}),
        True,
        (frozenset({"x"}), 42),
        {"platform": FILE},
        Entry(PAGE, 1000.5),
    ]
    for value in values[:-1]:
        assert decode(encode(value)) == value
    text = encode(PAGE)
    assert text.isascii() and "pickle" not in text


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x04\x95",  # a pickle
        b"[1]",
        b"[99, null]",  # another format version
        b'[1, {"page": {"name": 1}}]',
        b'[1, {"file": ["a", "b"]}]',
        b'[1, {"set": "ab"}]',
        b'[1, {"unknown": []}]',
        b'[1, {"page": {"name": "a", "files": [["x"], [], [], [], [], [], [], [], [], []]}}]',
    ],
)
def test_anything_else_is_a_bad_record(data: bytes) -> None:
    with pytest.raises(BadRecord):
        decode(data)


async def test_a_cache_of_pickles_is_emptied_unread_when_opened(tmp_path: Path) -> None:
    RAN.clear()
    for name in ("pages", "details", "recent-uploads", "metadata", "provenance"):
        old = diskcache.Cache(str(tmp_path / name))
        old.set(("page", "platform", "a"), Detonator())  # a pickled key and value
        old.set("big", [Detonator(), "x" * 100_000])  # a pickle in a file of its own
        old.close()
    pages = PageStore(tmp_path, LocalCoordinator(tmp_path))
    details = DetailsStore(tmp_path)
    uploads = RecentUploads(tmp_path)
    metadata, provenance = MetadataStore(tmp_path), ProvenanceStore(tmp_path)
    try:
        assert await pages.get(("page", "platform", "a")) is None
        assert list(pages.items()) == [] and len(pages) == 0
        assert (await details.read("platform", "a")).versions == {}
        assert await uploads.latest() == []
        assert await metadata.get("platform", "a" * 64) is None
        assert await provenance.get("platform", "a" * 64) is None
    finally:
        for store in (pages, details, uploads, metadata, provenance):
            store.close()
    assert RAN == []
    for name in ("pages", "details", "recent-uploads", "metadata", "provenance"):
        assert [f for f in (tmp_path / name).rglob("*.val")] == []  # the big one's file too


async def test_what_the_stores_write_is_plain_text_and_bytes(tmp_path: Path) -> None:
    pages = PageStore(tmp_path, LocalCoordinator(tmp_path))
    details = DetailsStore(tmp_path)
    uploads = RecentUploads(tmp_path)
    metadata, provenance = MetadataStore(tmp_path), ProvenanceStore(tmp_path)
    locations = FileLocations(tmp_path, pages.writes)
    when = datetime(2024, 1, 1, tzinfo=UTC)
    try:
        await pages.put(("page", "platform", "a"), Entry(PAGE, 1000.0))
        locations.remember_now([FILE])
        await details.add_versions("platform", "a", {"1.0": Listed(when, ((7, 11), (8, None)))})
        await details.add_files("platform", "a", {(FILE.filename, FILE.sha256): (1234, when)})
        await uploads.record(Upload("a-1.0.tar.gz", "platform", "ci", at=1000.0))
        await metadata.put("platform", "a" * 64, b"Metadata-Version: 2.1\nName: a\n", "a")
        await provenance.put("platform", "a" * 64, Kept(b'{"x": 1}\n', True, "verified: a\nb"))

        assert await pages.get(("page", "platform", "a")) == Entry(PAGE, 1000.0)
        assert locations.of_now(FILE.sha256) == [FILE]
        known = await details.read("platform", "a")
        assert known.versions == {"1.0": Listed(when, ((7, 11), (8, None)))}
        assert known.files == {(FILE.filename, FILE.sha256): (1234, when)}
        assert [(u.filename, u.at) for u in await uploads.latest()] == [("a-1.0.tar.gz", 1000.0)]
        assert await metadata.get("platform", "a" * 64) == b"Metadata-Version: 2.1\nName: a\n"
        kept = await provenance.get("platform", "a" * 64)
        assert kept == Kept(b'{"x": 1}\n', True, "verified: a\nb")
    finally:
        for store in (pages, details, uploads, metadata, provenance, locations):
            store.close()
    for name in ("pages", "details", "recent-uploads", "metadata", "provenance"):
        rows = _rows(tmp_path / name / "cache.db")
        assert rows and all(raw == 1 and mode != 4 for _, raw, mode in rows), rows  # 4: pickled
    with contextlib.closing(sqlite3.connect(tmp_path / "locations.db")) as db:
        [row] = db.execute("SELECT * FROM locations").fetchall()
    assert all(isinstance(v, str | int | type(None)) for v in row), row  # plain values
    assert (row[0], row[1], row[2]) == (FILE.filename, FILE.sha256, FILE.source)


def test_file_locations_keep_every_field_as_it_was_and_change_only_what_changed(
    tmp_path: Path,
) -> None:
    when = datetime(2024, 1, 1, 12, 30, 0, 123456, tzinfo=UTC)
    files = [
        DistFile("b-1.0.tar.gz", "b" * 64, "platform", "https://g/b", None, False, None, None),
        DistFile("c-1.0.tar.gz", "c" * 64, "platform", "https://g/c", ">=3.8", True, 0, when),
        DistFile(
            "c-1.0.tar.gz", "c" * 64, "pypi", "https://p/c", None, "broken", 7, when, "d" * 64
        ),
    ]
    locations = FileLocations(tmp_path, writes_for(tmp_path))
    try:
        locations.remember_now(files)
        assert locations.of_now("b" * 64) == files[:1]
        assert sorted(locations.of_now("c" * 64), key=lambda f: f.source) == files[1:]
        moved = replace(files[0], url="https://g/b-moved", yanked="gone")
        locations.remember_now([moved, files[1]])
        assert locations.of_now("b" * 64) == [moved]
        assert len(locations.of_now("c" * 64)) == 2
    finally:
        locations.close()


def test_file_locations_of_a_json_record_per_row_are_kept_as_columns(tmp_path: Path) -> None:
    # locations.db as the previous release left it: pages cached then still list these files
    with contextlib.closing(sqlite3.connect(tmp_path / "locations.db")) as db, db:
        db.execute(
            "CREATE TABLE locations (sha256 TEXT NOT NULL, source TEXT NOT NULL, "
            "file TEXT NOT NULL, UNIQUE (sha256, source))"
        )
        rows = [(FILE.sha256, FILE.source, encode(FILE)), ("b" * 64, "platform", "[1")]
        db.executemany("INSERT INTO locations VALUES (?, ?, ?)", rows)
        db.execute("PRAGMA user_version = 1001")
    locations = FileLocations(tmp_path, writes_for(tmp_path))
    try:
        assert locations.of_now(FILE.sha256) == [FILE]
        assert locations.of_now("b" * 64) == []  # not a record: not kept
    finally:
        locations.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "locations.db")) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("locations",)]


async def test_a_malformed_record_is_dropped_and_counted(tmp_path: Path) -> None:
    pages = PageStore(tmp_path, LocalCoordinator(tmp_path))
    details = DetailsStore(tmp_path)
    locations = FileLocations(tmp_path, pages.writes)
    before = _dropped("index records"), _dropped("file locations")
    try:
        raw = open_cache(tmp_path / "pages", 1)
        raw.set(encode_key(("page", "platform", "a")), '[1, [{"page": {"name": 7}}, 1.0]]')
        raw.set(encode_key(("file", "a" * 64)), "not json")
        raw.close()
        with contextlib.closing(sqlite3.connect(tmp_path / "locations.db")) as db, db:
            bad = ("a.whl", "a" * 64, "platform", "u", None, 0, "a size", None, None, None)
            db.execute("INSERT INTO locations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", bad)
        raw = open_cache(tmp_path / "details", 1)
        raw.set(encode_key(("versions", "platform", "a")), '[1, {"map": {"1.0": [1, 2, 3]}}]')
        raw.close()
        assert await pages.get(("page", "platform", "a")) is None
        assert pages.get_now(("file", "a" * 64)) is None
        assert (await details.read("platform", "a")).versions == {}
        assert list(pages.items()) == []  # dropped as they were read
        assert locations.of_now("a" * 64) == [] and locations.of_now("a" * 64) == []
    finally:
        pages.close()
        details.close()
        locations.close()
    assert (_dropped("index records") - before[0], _dropped("file locations") - before[1]) == (2, 1)


def test_a_version_other_than_the_stores_empties_the_cache(tmp_path: Path) -> None:
    cache = open_cache(tmp_path / "x", 1)
    cache.set("kept", "yes")
    cache.close()
    cache = open_cache(tmp_path / "x", 1)
    assert cache.get("kept") == "yes"
    cache.close()
    cache = open_cache(tmp_path / "x", 2)
    assert cache.get("kept") is None
    cache.close()
    assert not os.path.exists(tmp_path / "x" / "kept")
