"""Caches over a directory that refuses writes: they keep answering, hold what the disk would not
take in memory, say what is wrong once, and take writes again once the pause is over."""

import errno
import logging
import sqlite3
from pathlib import Path

import pytest

from gitlab_pypi_proxy.index.cached import PageKey
from gitlab_pypi_proxy.storage import writable
from gitlab_pypi_proxy.storage.metadata_store import MetadataStore
from gitlab_pypi_proxy.storage.stores import Stores
from gitlab_pypi_proxy.storage.uploads import RecentUploads, Upload
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed

A, B = "a" * 64, "b" * 64


def refuse_writes(monkeypatch: pytest.MonkeyPatch, cache: object, *names: str) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    for name in names:
        monkeypatch.setattr(cache, name, full)


async def test_pages_locations_and_invalidations_are_held_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    stores = Stores.local(tmp_path, 2**30)
    index = composed(tmp_path, [source], stores=stores).plain
    await index.project_page("x")  # kept on disk while it still could be
    refuse_writes(monkeypatch, stores.pages._disk, "set", "delete", "transact")
    refuse_writes(monkeypatch, stores.locations._db, "writing")
    source.add("y", "y-1.0.tar.gz", B)
    with caplog.at_level(logging.WARNING):
        assert [f.filename for f in (await index.project_page("y")).files] == ["y-1.0.tar.gz"]
        assert [f.filename for f in (await index.project_page("y")).files] == ["y-1.0.tar.gz"]
    assert source.page_calls == 2  # x, then y once: the second y came from memory
    assert [f.source for f in await stores.locations.of(B)] == ["platform"]
    assert caplog.text.count("cache directory cannot be written") == 1

    source.add("x", "x-2.0.tar.gz", B)  # an upload, then its page is invalidated
    await stores.pages.forget(PageKey("platform", "x").raw)
    page = await index.project_page("x")
    assert [f.filename for f in page.files] == ["x-1.0.tar.gz", "x-2.0.tar.gz"]
    assert not stores.pages.writes.keeping


async def test_metadata_and_uploads_are_held_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, uploads = MetadataStore(tmp_path), RecentUploads(tmp_path)
    refuse_writes(monkeypatch, store._disk, "set")
    refuse_writes(monkeypatch, uploads._disk, "set")
    digest = await store.put("platform", A, b"Metadata-Version: 2.1\nName: x\n", "x")
    assert await store.digests([("platform", A), ("platform", B)], "x") == {("platform", A): digest}
    assert await store.get("platform", A) == b"Metadata-Version: 2.1\nName: x\n"
    await uploads.record(Upload("x-1.0.tar.gz", "platform", "ci"))
    assert [u.filename for u in await uploads.latest()] == ["x-1.0.tar.gz"]


def test_writes_are_tried_again_after_the_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(writable.time, "monotonic", lambda: clock[0])
    writes = writable.writes_for(tmp_path)
    writes.failed(OSError(errno.ENOSPC, "No space left on device"), "keeping a file")
    state = writes.state()
    assert (state.writable, state.state, state.reason) == (False, "full", "No space left on device")
    assert not writes.keeping
    clock[0] += writable.PAUSE_SECONDS
    assert writes.keeping and writes.state().writable
    writes.failed(sqlite3.OperationalError("attempt to write a readonly database"), "x")
    assert writes.state().state == "read-only"
