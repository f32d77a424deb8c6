"""A page served leaves nothing behind in the worker in proportion to its files: repeated installs
of big projects (botocore lists 5,000 files, pydantic-core 15,000) once grew every worker by
the file names and parsed versions memoized for each of them. Measured as the Python
allocations still held once the page is answered and the background work it started is done."""

import asyncio
import gc
import tracemalloc
from pathlib import Path

from gitlab_pypi_proxy.http.serialize import JSON, render
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.services import Composed
from gitlab_pypi_proxy.sources.gitlab_details import version_of
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.pages import Entry, PageStore
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed

FILES = 1500
KIB = 2**10
MIB = 2**20


def _big_projects(source: FakeSource, names: list[str]) -> None:
    """Projects of FILES wheels each (4 platforms a version), no two file names alike."""
    for name in names:
        for n in range(FILES):
            version, platform = divmod(n, 4)
            filename = f"{name}-1.{version}-cp312-cp312-manylinux_{platform}_x86_64.whl"
            source.add(name, filename, f"{hash((name, n)) & (2**256 - 1):064x}")


async def _serve(built: Composed, name: str) -> int:
    """A page asked and rendered as a client asks it; its bytes."""
    page = await built.index.project_page(name)
    rendered = await asyncio.to_thread(render, page, JSON)
    await built.tasks.settled()
    await built.metadata.tasks.settled()
    return len(rendered.body)


async def _held_after_serving(built: Composed, name: str) -> int:
    """The Python allocations the worker still holds once `name`'s page has been served."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert await _serve(built, name) > FILES * 100
        for _ in range(3):  # the loop's callbacks that hand threads' results over, run
            await asyncio.sleep(0)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def test_a_big_public_page_served_leaves_nothing_per_file_behind(tmp_path: Path) -> None:
    public = FakeSource("pypi")
    _big_projects(public, ["warmup", "botocore"])
    built = composed(tmp_path, [], [public])
    try:
        await _serve(built, "warmup")  # the stores' connections, the pool's threads
        held = await _held_after_serving(built, "botocore")
    finally:
        await built.close()
    # a memo entry per file (a name and a parsed version, ~240 bytes) would hold ~350 KiB; what
    # does not grow with the files (a thread's first connection, the loop's callbacks under way)
    # stays under 128 KiB however busy the machine
    assert held < 128 * KIB, held


async def test_the_files_of_private_names_are_memoized_within_a_bound(tmp_path: Path) -> None:
    """Which files a private name has is memoized for the file URLs of public indexes (one of
    that name is refused), within a bound however many big private names are asked."""
    private, public = FakeSource("platform"), FakeSource("pypi")
    names = [f"big{n}" for n in range(8)]
    _big_projects(private, names)
    built = composed(tmp_path, [private], [public])
    try:
        for name in names:  # kept as records, as a client's install leaves them
            await built.index.project_page(name)
        await built.tasks.settled()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for name in names:  # each name's files read from its record and memoized
            await built.index.check_file("0" * 64, f"{name}-1.0-py3-none-any.whl")
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    finally:
        await built.close()
    # every one of the 12,000 (digest, file name) pairs held: ~3.5 MiB
    assert held < 2 * MIB, held


def test_the_versions_of_gitlab_file_names_are_memoized_within_a_bound() -> None:
    """Files that lack exact details have their versions worked out again on every look at
    their page; those are memoized, within a bound however many files are looked at."""
    version_of.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20_000):  # each name made as a page read from its record makes it
            version_of(f"acme-core-{n // 5}.0.{n % 5}-py3-none-any.whl")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        version_of.cache_clear()
    # every one memoized, its name and version: ~160 bytes each, ~3 MiB
    assert held < 3 * MIB // 2, held


def test_a_big_record_is_read_without_its_bytes_held_twice(tmp_path: Path) -> None:
    """A big project's page record (MiBs of JSON) is read as text from its file and decoded by
    column: while it is read, the worker holds the page it makes, the text and one array per
    field, not the file's bytes beside the text nor an array per file."""
    store = PageStore(tmp_path, LocalCoordinator(tmp_path))
    files = tuple(
        DistFile(f"big-1.{n}-py3-none-any.whl", f"{n:064x}", "pypi", f"https://f.example/{n}")
        for n in range(10_000)
    )
    store.set_now(("page", "pypi", "big"), Entry(ProjectPage("big", files, ("pypi",)), 1.0))
    del files
    size = sum(f.stat().st_size for f in (tmp_path / "pages").rglob("*.val"))
    try:
        gc.collect()
        tracemalloc.start()
        entry = store.get_now(("page", "pypi", "big"))
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        store.close()
    assert len(entry.value.files) == 10_000 and size > MIB
    assert peak - held < 2 * size, (size, held, peak)  # bytes and an array per file: 2.5 times
