"""The workers of one machine share the pages they render (gitlab_pypi_proxy.storage.
rendered_pages): a page one worker rendered is found by another under the same generation, the
same bytes and ETag, until its records expire; never once its project or everything changed,
never under another reader's key, and a worker whose generation is its own (news it could not
write) shares nothing."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitlab_pypi_proxy.http import page_memo
from gitlab_pypi_proxy.http.page_memo import PageMemo, memo_key
from gitlab_pypi_proxy.http.serialize import JSON, Rendered, render
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.stores import Stores
from tests.waiting import async_wait_until


def _worker(directory: Path) -> PageMemo:
    stores = Stores.local(directory, 2**30)
    return PageMemo(stores.coordinator, stores.rendered_pages())


def _page(name: str, files: int) -> ProjectPage:
    """A page as a public index lists one (digests do not compress)."""
    listed = tuple(
        DistFile(f"{name}-1.{n}-py3-none-any.whl", os.urandom(32).hex(), "pypi", f"https://f/{n}")
        for n in range(files)
    )
    return ProjectPage(name, listed, ("pypi",))


async def test_a_page_one_worker_rendered_is_found_by_another(tmp_path: Path) -> None:
    a, b = _worker(tmp_path), _worker(tmp_path)
    big = render(_page("numpy", 200), JSON)
    small = Rendered(b"<html>", "text/html", '"small"', None)
    assert big.gzipped is not None  # kept as its gzip copy alone
    pages = {
        memo_key("numpy", JSON, frozenset({"pypi"})): big,
        memo_key("tiny", "text/html", None): small,
    }
    for key, page in pages.items():
        assert await b.find(key, b.generation(key[0])) is None
        a.put(key, page, time.time() + 300, a.generation(key[0]))
    await a.sharing.settled()
    for key, page in pages.items():
        found = await b.find(key, b.generation(key[0]))
        assert found == (page.compact(), True) and found[0].body == page.body
    other_reader = memo_key("numpy", JSON, frozenset({"gitlab", "pypi"}))
    assert await b.find(other_reader, b.generation("numpy")) is None
    await a.close()
    await b.close()


async def test_a_shared_page_is_gone_once_its_project_or_everything_changed(
    tmp_path: Path,
) -> None:
    a, b, c = _worker(tmp_path), _worker(tmp_path), _worker(tmp_path)
    pages = {what: Rendered(b"<html>", "text/html", f'"{what}"', None) for what in ("x", "/")}
    for what, page in pages.items():
        a.put(memo_key(what, "text/html", None), page, time.time() + 300, a.generation(what))
    await a.sharing.settled()
    before = b.generation("x")
    await a.coordinator.changed("x")
    await async_wait_until(lambda: b.generation("x") != before, "worker b to hear of x")
    assert await b.find(memo_key("x", "text/html", None), b.generation("x")) is None
    assert await b.find(memo_key("/", "text/html", None), b.generation("/")) == (pages["/"], True)
    before = c.generation("/")
    await a.coordinator.changed()
    await async_wait_until(lambda: c.generation("/") != before, "worker c to hear of it")
    assert await c.find(memo_key("/", "text/html", None), c.generation("/")) is None
    for memo in (a, b, c):
        await memo.close()


async def test_a_shared_page_lasts_as_long_as_its_records(tmp_path: Path) -> None:
    a, b = _worker(tmp_path), _worker(tmp_path)
    key = memo_key("x", "text/html", None)
    until = time.time() + 0.5
    a.put(key, Rendered(b"<html>", "text/html", '"e"', None), until, a.generation("x"))
    await a.sharing.settled()
    assert b.shared is not None
    disk_key = b.shared.key(key, b.generation("x").records, b.rendering())
    assert disk_key is not None
    found = await b.shared.get(disk_key)
    assert found is not None and until - 0.01 <= found[1] < until + 1  # as long, give or take
    await async_wait_until(lambda: time.time() > found[1], "the records to expire")
    assert await b.shared.get(disk_key) is None
    assert await b.find(memo_key("x", "text/html", None), b.generation("x")) is None
    await a.close()
    await b.close()


async def test_a_worker_whose_news_went_unwritten_shares_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _worker(tmp_path), _worker(tmp_path)

    def unwritable(self: LocalCoordinator, page: str = "") -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalCoordinator, "changed_now", unwritable)
    await a.coordinator.changed("x")  # only worker a counts it
    key = memo_key("x", "text/html", None)
    page = Rendered(b"<html>", "text/html", '"e"', None)
    a.put(key, page, time.time() + 300, a.generation("x"))
    await a.sharing.settled()
    assert a.get(key, a.generation("x")) == page  # its own memo has it
    assert await b.find(key, b.generation("x")) is None
    await a.close()
    await b.close()


async def test_workers_rendering_from_other_settings_or_advisories_share_nothing(
    tmp_path: Path,
) -> None:
    """A worker a SIGHUP or a restart started with another export or other settings (the same
    generation: nothing in the records changed) renders its own pages."""
    stores_a, stores_b = Stores.local(tmp_path, 2**30), Stores.local(tmp_path, 2**30)
    said = {"a": "0.1:settings:export-1", "b": "0.1:settings:export-2"}
    a = PageMemo(stores_a.coordinator, stores_a.rendered_pages(), lambda: said["a"])
    b = PageMemo(stores_b.coordinator, stores_b.rendered_pages(), lambda: said["b"])
    key = memo_key("lib", JSON, None)
    page = Rendered(b"{}", JSON, '"e"', None)
    a.put(key, page, time.time() + 300, a.generation("lib"))
    await a.sharing.settled()
    assert await b.find(key, b.generation("lib")) is None
    said["b"] = said["a"]  # the same export and settings now
    assert await b.find(key, b.generation("lib")) == (page, True)
    await a.close()
    await b.close()


def test_a_page_s_disk_key_is_the_same_in_every_process(tmp_path: Path) -> None:
    """A reader of several sources: the set of them is in the key, sorted."""
    code = (
        "from pathlib import Path; "
        "from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator; "
        "from gitlab_pypi_proxy.storage.rendered_pages import RenderedPages; "
        f"pages = RenderedPages(LocalCoordinator(Path({str(tmp_path)!r}))); "
        "allowed = frozenset(f'source-{n}' for n in range(8)); "
        "print(pages.key(('lib', 'text/html', allowed, ''), (1, 0, 2), 'r'))"
    )
    keys = {_in_a_process(code, seed) for seed in (1, 2, 3)}
    assert len(keys) == 1 and len(next(iter(keys))) == 64


def _in_a_process(code: str, hash_seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_the_settings_digest_is_the_same_in_every_process(tmp_path: Path) -> None:
    """Sets are sorted: their order differs between processes (hash randomization)."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\ndirectory = "{tmp_path}/cache"\n[gitlab]\nurl = "https://gitlab.example"\n'
        '[[sources]]\nname = "platform"\ngitlab_project = 11\n'
        'allow_public = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]\n'
        'yanked = { lib = ["1.0", "1.1", "1.2", "2.0", "2.1"] }\n'
    )
    code = (
        "import sys; from gitlab_pypi_proxy.config import load; "
        f"print(load({str(config)!r}).digest())"
    )
    digests = {_in_a_process(code, seed) for seed in (1, 2, 3)}
    assert len(digests) == 1 and len(next(iter(digests))) == 64


async def test_a_page_from_before_its_wheels_gained_metadata_is_served_until_rendered_again(
    tmp_path: Path,
) -> None:
    """Metadata learned for a project's wheels (`enriched`) leaves its rendered pages servable,
    marked not current, in the worker that rendered one and in the others (through the disk),
    until a page rendered since is kept; a change of its records never does."""
    a, b = _worker(tmp_path), _worker(tmp_path)
    key = memo_key("x", "text/html", None)
    before, after = (Rendered(b, "text/html", f'"{b.decode()}"', None) for b in (b"1", b"2"))
    a.put(key, before, time.time() + 300, a.generation("x"))
    await a.sharing.settled()
    enrichment = b.generation("x").enrichment
    await a.coordinator.enriched("x")
    await async_wait_until(
        lambda: b.generation("x").enrichment != enrichment, "worker b to hear of it"
    )
    assert await a.find(key, a.generation("x")) == (before, False)
    assert await b.find(key, b.generation("x")) == (before, False)
    b.put(key, after, time.time() + 300, b.generation("x"))  # rendered again
    await b.sharing.settled()
    assert await a.find(key, a.generation("x")) == (after, True)
    await b.coordinator.changed("x")
    await async_wait_until(lambda: a.get(key, a.generation("x")) is None, "worker a to hear")
    assert await a.find(key, a.generation("x")) is None
    await a.close()
    await b.close()


async def test_a_page_is_rendered_again_after_a_pause_in_the_pages_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background rendering of a page whose wheels gained metadata waits for a pause in
    the worker's page requests (an install's burst is answered first), one at a time."""
    monkeypatch.setattr(page_memo, "REFRESH_WAIT", 60.0)  # only the pause lets it start
    memo = _worker(tmp_path)
    key = memo_key("x", "text/html", None)
    old, new = (Rendered(b, "text/html", f'"{b.decode()}"', None) for b in (b"1", b"2"))
    generation = memo.generation("x")
    memo.put(key, old, time.time() + 300, generation)
    started: list[float] = []

    async def render() -> tuple[Rendered, float]:
        started.append(time.monotonic())
        return new, time.time() + 300

    memo.refresh(key, render, generation)
    memo.refresh(key, render, generation)  # once at a time: joined
    asked = []
    for _ in range(20):  # a burst of pages asked
        memo.get(memo_key("y", "text/html", None), memo.generation("y"))
        asked.append(time.monotonic())
        await asyncio.sleep(0.02)
    await memo.refreshing.settled()
    before = [t for t in asked if t < started[0]]  # a stall of this loop may end the burst
    assert len(started) == 1 and before and started[0] - before[-1] >= page_memo.QUIET - 0.01
    assert await memo.find(key, generation) == (new, True)
    await memo.close()


async def test_a_worker_sharing_pages_holds_the_newest_in_memory_and_finds_the_rest_on_disk(
    tmp_path: Path,
) -> None:
    memo = _worker(tmp_path)
    pages = {}
    for n in range(20):  # ~170 KiB gzipped each
        pages[memo_key(f"p{n}", JSON, None)] = render(_page(f"p{n}", 3000), JSON)
    assert sum(p.compact().kept_bytes for p in pages.values()) > page_memo.SHARED_MAX_BYTES
    for key, page in pages.items():
        memo.put(key, page, time.time() + 300, memo.generation(key[0]))
    await memo.sharing.settled()
    held = [p for k, p in pages.items() if memo.get(k, memo.generation(k[0])) is not None]
    assert 0 < len(held) < len(pages)
    assert sum(p.compact().kept_bytes for p in held) <= page_memo.SHARED_MAX_BYTES
    for key, page in pages.items():
        assert await memo.find(key, memo.generation(key[0])) == (page.compact(), True)
    await memo.close()
