"""The merged index: priority, conflicts, partial answers, stale pages, offline."""

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from gitlab_pypi_proxy.aio import TaskSet
from gitlab_pypi_proxy.errors import NotFound, Offline, Unavailable
from gitlab_pypi_proxy.http.page_memo import PageMemo
from gitlab_pypi_proxy.http.serialize import Rendered
from gitlab_pypi_proxy.index.cached import CachedSource, Freshness, PageKey
from gitlab_pypi_proxy.index.private_first import PrivateFirst
from gitlab_pypi_proxy.model import DistFile
from gitlab_pypi_proxy.sources.base import Parts
from gitlab_pypi_proxy.storage import local_coordinator
from gitlab_pypi_proxy.storage.coordinator import page_bucket
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.pages import PageStore
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed
from tests.waiting import async_wait_until

A, B, C = "a" * 64, "b" * 64, "c" * 64


def make_index(tmp_path: Path, *sources: FakeSource, ttl: float = 300) -> PrivateFirst:
    return composed(tmp_path, sources, ttl=ttl).plain


async def test_merge_in_priority_order_dedupes_and_keeps_first_on_conflict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = FakeSource("platform"), FakeSource("acme")
    first.add("x", "x-1.0.tar.gz", A)
    second.add("x", "x-1.0.tar.gz", A)  # same file: listed once
    second.add("x", "x-2.0.tar.gz", B)
    first.add("x", "x-3.0.tar.gz", C)
    second.add("x", "x-3.0.tar.gz", B)  # same name, other bytes: conflict, first wins
    with caplog.at_level(logging.WARNING):
        page = await make_index(tmp_path, first, second).project_page("x")
    assert [(f.filename, f.sha256, f.source) for f in page.files] == [
        ("x-1.0.tar.gz", A, "platform"),
        ("x-3.0.tar.gz", C, "platform"),
        ("x-2.0.tar.gz", B, "acme"),
    ]
    assert page.sources == ("platform", "acme")
    assert "conflict: x-3.0.tar.gz" in caplog.text


async def test_missing_in_one_source_present_in_another(tmp_path: Path) -> None:
    first, second = FakeSource("platform"), FakeSource("acme")
    second.add("y", "y-1.0.tar.gz", A)
    page = await make_index(tmp_path, first, second).project_page("y")
    assert [f.source for f in page.files] == ["acme"]
    assert not page.stale


async def test_missing_everywhere_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await make_index(tmp_path, FakeSource("platform")).project_page("nope")


async def test_one_source_down_others_answer(tmp_path: Path) -> None:
    first, second = FakeSource("platform", down=True), FakeSource("acme")
    second.add("x", "x-1.0.tar.gz", A)
    page = await make_index(tmp_path, first, second).project_page("x")
    assert [f.source for f in page.files] == ["acme"]
    assert page.stale  # partial: say so


async def test_all_down_and_nothing_cached_names_the_sources(tmp_path: Path) -> None:
    index = make_index(tmp_path, FakeSource("platform", down=True), FakeSource("acme"))
    with pytest.raises(Unavailable) as caught:
        await index.project_page("x")
    assert "platform" in str(caught.value)


async def test_stale_page_served_when_upstream_down_after_ttl(tmp_path: Path) -> None:
    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    index = make_index(tmp_path, source, ttl=0)
    assert not (await index.project_page("x")).stale
    source.down = True
    page = await index.project_page("x")
    assert page.stale
    assert [f.filename for f in page.files] == ["x-1.0.tar.gz"]


async def test_fresh_page_is_not_refetched_and_survives_a_new_cache(tmp_path: Path) -> None:
    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    await make_index(tmp_path, source).project_page("x")
    await make_index(tmp_path, source).project_page("x")  # a restart: same directory
    assert source.page_calls == 1


async def test_concurrent_misses_fetch_once(tmp_path: Path) -> None:
    import asyncio

    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    index = make_index(tmp_path, source)
    pages = await asyncio.gather(*(index.project_page("x") for _ in range(20)))
    assert source.page_calls == 1
    assert all(p.files == pages[0].files for p in pages)


async def test_a_lookup_that_missed_before_a_load_landed_does_not_load_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller whose cache lookup (a thread) answers "miss" only after another caller's load of
    the same page has landed joins nothing: it must still not ask the upstream again."""
    import asyncio

    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    index = make_index(tmp_path, source)
    first_landed = asyncio.Event()
    lookups = 0
    original = PageStore.get

    async def late_second_lookup(self: PageStore, key: object) -> object:
        nonlocal lookups
        number = 0
        if isinstance(key, tuple) and key[0] == "page":
            lookups += 1
            number = lookups
        entry = await original(self, key)
        if number == 2:  # the second caller's: read before the first load landed, answered after
            await first_landed.wait()
        return entry

    monkeypatch.setattr(PageStore, "get", late_second_lookup)
    first = asyncio.create_task(index.project_page("x"))
    second = asyncio.create_task(index.project_page("x"))
    await first
    first_landed.set()
    assert (await second).files == (await first).files
    assert source.page_calls == 1


async def test_offline_serves_cache_and_refuses_the_rest(tmp_path: Path) -> None:
    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    await make_index(tmp_path, source, ttl=0).project_page("x")
    offline = composed(tmp_path, [source], ttl=0, offline=True).plain
    calls = source.page_calls
    assert [f.filename for f in (await offline.project_page("x")).files] == ["x-1.0.tar.gz"]
    with pytest.raises(Offline):
        await offline.project_page("other")
    assert source.page_calls == calls  # never contacted


async def test_sources_outside_the_allowed_set_are_invisible(tmp_path: Path) -> None:
    first, second = FakeSource("platform"), FakeSource("acme")
    first.add("x", "x-1.0.tar.gz", A)
    second.add("x", "x-2.0.tar.gz", B)
    index = make_index(tmp_path, first, second)
    page = await index.project_page("x", frozenset({"acme"}))
    assert [f.source for f in page.files] == ["acme"]
    assert await index.project_list(frozenset({"acme"})) is not None
    assert first.page_calls == 0


async def test_locate_prefers_listing_source_then_asks_every_gitlab_source(tmp_path: Path) -> None:
    first, second = FakeSource("platform"), FakeSource("acme")
    second.add("x", "x-1.0.tar.gz", A)
    built = composed(tmp_path, [first, second])
    index, files = built.plain, built.files
    assert [f.source for f in await files.locate(A, "x-1.0.tar.gz")] == ["platform", "acme"]
    await index.project_page("x")
    await built.close()  # where the page's files are is remembered in the background
    assert [f.source for f in await files.locate(A, "x-1.0.tar.gz")] == ["acme", "platform"]
    assert [f.source for f in await files.locate(A, "x-1.0.tar.gz", frozenset({"platform"}))] == [
        "platform"
    ]


async def test_project_list_is_the_union(tmp_path: Path) -> None:
    first, second = FakeSource("platform"), FakeSource("acme")
    first.add("x", "x-1.0.tar.gz", A)
    second.add("y", "y-1.0.tar.gz", B)
    projects = await make_index(tmp_path, first, second).project_list()
    assert projects.names == {"x", "y"}


async def test_memo_is_dropped_by_an_invalidation_in_another_worker(tmp_path: Path) -> None:
    worker_a = PageStore(tmp_path, LocalCoordinator(tmp_path))
    memo_b = PageMemo(LocalCoordinator(tmp_path))
    key = ("x", "text/html", None)
    generation = memo_b.generation("x")
    page = Rendered(b"<html>", "text/html", '"e"', None)
    memo_b.put(key, page, fresh_until=time.time() + 300, generation=generation)
    assert memo_b.get(key, memo_b.generation("x")) == page
    await worker_a.forget(("page", "platform", "x"))
    # within GENERATION_SECONDS: a worker reads the generation file at most that often
    await async_wait_until(
        lambda: memo_b.get(key, memo_b.generation("x")) is None, "worker b to hear the news"
    )


async def test_a_workers_own_change_is_seen_at_once(tmp_path: Path) -> None:
    coordinator = LocalCoordinator(tmp_path)
    memo = PageMemo(coordinator)
    key = ("x", "text/html", None)
    page = Rendered(b"<html>", "text/html", '"e"', None)
    memo.put(key, page, fresh_until=time.time() + 300, generation=memo.generation("x"))
    assert memo.get(key, memo.generation("x")) == page
    await coordinator.changed()
    assert memo.get(key, memo.generation("x")) is None


async def test_a_project_s_news_drops_its_pages_in_every_worker_and_no_other_s(
    tmp_path: Path,
) -> None:
    """Upload details learned for one GitLab project (a cold install learns them project after
    project) leave the other projects' rendered pages in every worker's memo."""
    memo_b = PageMemo(LocalCoordinator(tmp_path))
    worker_a = LocalCoordinator(tmp_path)
    other = next(f"y{n}" for n in range(100) if page_bucket(f"y{n}") != page_bucket("x"))
    pages = {what: Rendered(b"<html>", "text/html", '"e"', None) for what in ("x", other, "/")}
    for what, page in pages.items():
        memo_b.put((what, "text/html", None), page, time.time() + 300, memo_b.generation(what))
    await worker_a.changed("x")
    await async_wait_until(
        lambda: memo_b.get(("x", "text/html", None), memo_b.generation("x")) is None,
        "worker b to hear of x",
    )
    for what in (other, "/"):
        assert memo_b.get((what, "text/html", None), memo_b.generation(what)) == pages[what]
    await worker_a.changed()  # everything: every page
    await async_wait_until(
        lambda: not any(memo_b.get((w, "text/html", None), memo_b.generation(w)) for w in pages),
        "worker b to hear of everything",
    )


def test_the_generation_file_is_read_at_most_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator = LocalCoordinator(tmp_path)
    coordinator.changed_now()
    stats: list[object] = []
    real_stat = os.stat

    def counted(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stats.append(path)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local_coordinator, "_clock", lambda: 1000.0)
    monkeypatch.setattr(local_coordinator.os, "stat", counted)
    first = coordinator.generation()
    assert [coordinator.generation() for _ in range(100)] == [first] * 100
    assert len(stats) == 1
    monkeypatch.setattr(
        local_coordinator, "_clock", lambda: 1000.0 + local_coordinator.GENERATION_SECONDS
    )
    coordinator.generation()
    assert len(stats) == 2


async def test_memo_expires_with_its_inputs(tmp_path: Path) -> None:
    memo = PageMemo(LocalCoordinator(tmp_path))
    key = ("x", "text/html", None)
    old = Rendered(b"<html>", "text/html", '"e"', None)
    memo.put(key, old, fresh_until=time.time() - 1, generation=memo.generation("x"))
    assert memo.get(key, memo.generation("x")) is None


async def test_merged_page_is_fresh_until_its_oldest_input(tmp_path: Path) -> None:
    first, second = FakeSource("platform"), FakeSource("acme")
    second.add("x", "x-1.0.tar.gz", A)
    before = time.time()
    page = await make_index(tmp_path, first, second, ttl=60).project_page("x")
    assert before + 60 <= page.fresh_until <= time.time() + 60
    first.down = True
    stale = await make_index(tmp_path, first, second, ttl=0).project_page("x")
    assert stale.fresh_until == 0.0  # never memoized


@pytest.mark.parametrize(("ttl", "negative_ttl", "calls"), [(0, 300, (1, 3)), (300, 0, (3, 1))])
async def test_not_here_is_kept_for_its_own_ttl(
    tmp_path: Path, ttl: int, negative_ttl: int, calls: tuple[int, int]
) -> None:
    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    index = composed(tmp_path, [source], ttl=ttl, negative_ttl=negative_ttl).plain
    for _ in range(3):
        with pytest.raises(NotFound):
            await index.project_page("nope")
    missing = source.page_calls
    for _ in range(3):
        await index.project_page("x")
    assert (missing, source.page_calls - missing) == calls


async def test_where_a_gitlab_pages_files_are_is_remembered_behind_the_clients_back(
    tmp_path: Path,
) -> None:
    source = FakeSource("platform")  # found by digest alone, like a GitLab source
    source.add("x", "x-1.0.tar.gz", A)
    built = composed(tmp_path, [source])
    await built.plain.project_page("x")
    await built.close()  # the background work finishes before the caches close
    assert [f.source for f in await built.files.locations.of(A)] == ["platform"]


class LearntSizes:
    """PEP 700 details a GitLab source learnt in the background: every file is 7 bytes."""

    async def refine(self, name: str, files: Sequence[DistFile]) -> list[DistFile] | None:
        return [replace(f, size=7) for f in files]

    async def settled(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_details_learnt_since_are_added_to_a_kept_page_not_to_a_fetched_one(
    tmp_path: Path,
) -> None:
    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    index = composed(tmp_path, [Parts(source, owns_names=True, details=LearntSizes())]).plain
    fetched = await index.project_page("x")  # as the source gave it just now
    assert [f.size for f in fetched.files] == [None]
    kept = await index.project_page("x")  # from the records, with what was learnt since
    assert [f.size for f in kept.files] == [7]


async def test_a_kept_answer_is_seen_without_reading_it(tmp_path: Path) -> None:
    """What the dependency warming asks before it warms a name: answers kept, read or not."""
    source = FakeSource("platform")
    source.add("x", "x-1.0.tar.gz", A)
    stores = Stores.local(tmp_path, 2**20)
    tasks = TaskSet(logging.getLogger("test"), "test")
    cached = CachedSource(source, stores.pages, stores.locations, Freshness(300, 300), tasks)
    assert not await cached.kept("x") and not await cached.kept("y")
    await cached.page("x")
    await cached.page("y")  # "not here" is an answer too
    assert await cached.kept("x") and await cached.kept("y")
    await stores.pages.forget(PageKey("platform", "x").raw)
    assert not await cached.kept("x")
    await tasks.close()
