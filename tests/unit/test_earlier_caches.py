"""A cache directory written by an earlier version is read as it is, though the classes of what it
pickled have moved since (proxy.cache.pages → gitlab_pypi_proxy.storage.pages, ...)."""

import contextlib
import dataclasses
import pickle
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import diskcache

from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.storage.details import DetailsStore
from gitlab_pypi_proxy.storage.details import Version as Listed
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.pages import Entry, PageStore
from gitlab_pypi_proxy.storage.uploads import RecentUploads, Upload


@contextlib.contextmanager
def living_at(cls: type, module: str) -> Iterator[None]:
    """While it runs, `cls` is pickled as the class `module`.<name>, as earlier versions did."""
    moved = cls.__module__
    parts = module.split(".")
    # the module and its packages, as pickle imports them; those another class made are shared
    made = [
        m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m not in sys.modules
    ]
    for name in made:
        sys.modules[name] = types.ModuleType(name)
    setattr(sys.modules[module], cls.__qualname__, cls)
    cls.__module__ = module
    try:
        yield
    finally:
        cls.__module__ = moved
        for name in made:
            del sys.modules[name]


async def test_pages_details_and_uploads_written_by_an_earlier_version_are_read(
    tmp_path: Path,
) -> None:
    file = DistFile("a-1.0.tar.gz", "a" * 64, "platform", "https://g/a-1.0.tar.gz")
    page = ProjectPage("a", (file,), ("platform",))
    when = datetime(2024, 1, 1, tzinfo=UTC)
    with living_at(Entry, "proxy.cache.pages"):
        old = diskcache.Cache(str(tmp_path / "pages"))
        old.set(("page", "platform", "a"), Entry(page, 1000.0))
        old.close()
    with living_at(Listed, "proxy.cache.details"):
        old = diskcache.Cache(str(tmp_path / "details"))
        old.set(("versions", "platform", "a"), {"1.0": Listed(when, ((7, 11),))})
        old.close()
    with living_at(Upload, "proxy.recent_uploads"):
        old_uploads = diskcache.Deque(directory=str(tmp_path / "recent-uploads"))
        old_uploads.append(Upload("a-1.0.tar.gz", "platform", "ci", at=1000.0))
        old_uploads.cache.close()

    pages = PageStore(tmp_path, LocalCoordinator(tmp_path))
    entry = await pages.get(("page", "platform", "a"))
    assert entry == Entry(page, 1000.0)
    pages.close()
    details = DetailsStore(tmp_path)
    assert (await details.read("platform", "a")).versions == {"1.0": Listed(when, ((7, 11),))}
    details.close()
    uploads = RecentUploads(tmp_path)
    assert [u.filename for u in await uploads.latest()] == ["a-1.0.tar.gz"]
    uploads.close()


async def test_records_written_when_the_package_was_named_proxy_are_read(tmp_path: Path) -> None:
    file = DistFile("a-1.0.tar.gz", "a" * 64, "platform", "https://g/a-1.0.tar.gz")
    page = ProjectPage("a", (file,), ("platform",))
    with (
        living_at(Entry, "proxy.storage.pages"),
        living_at(ProjectPage, "proxy.model"),
        living_at(DistFile, "proxy.model"),
    ):
        old = diskcache.Cache(str(tmp_path / "pages"))
        old.set(("page", "platform", "a"), Entry(page, 1000.0))
        old.close()
    pages = PageStore(tmp_path, LocalCoordinator(tmp_path))
    assert await pages.get(("page", "platform", "a")) == Entry(page, 1000.0)
    pages.close()


def test_a_big_pages_record_asks_for_its_classes_fields_once_per_class(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Unpickling a record of thousands of files once asked dataclasses for the fields of every
    file: a third of a warm worker's time on big pages went there."""
    from gitlab_pypi_proxy import model
    from gitlab_pypi_proxy.storage import pickles

    files = tuple(DistFile(f"a-1.{n}.tar.gz", f"{n:064x}", "p", "https://g/") for n in range(3000))
    data = pickle.dumps(Entry(ProjectPage("a", files, ("p",)), 1.0))
    asked: list[type] = []

    def counted(cls):  # type: ignore[no-untyped-def]
        asked.append(cls)
        return dataclasses.fields(cls)

    monkeypatch.setattr(model, "fields", counted)
    model._layout.cache_clear()
    entry = pickles.loads(data)
    assert entry.value.files == files
    assert len(asked) <= 2  # DistFile's, ProjectPage's
