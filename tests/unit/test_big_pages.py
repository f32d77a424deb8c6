"""A page of many files costs the event loop no more than a page of a few: what is linear in its
files (parsing, merging, marking, annotating, rendering) runs in a thread, and in small C calls
there, so that the thread gives way to the loop (one `json.loads` or `json.dumps` of a whole
page holds the GIL for all of it)."""

import asyncio
import gc
import json
import sys
import threading
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gitlab_pypi_proxy.aio import CPU_SLOTS, THREADS
from gitlab_pypi_proxy.config import load
from gitlab_pypi_proxy.http.app import create_app
from gitlab_pypi_proxy.http.serialize import HTML, JSON, render
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.sources.simple_html import decoded, parse_project_document
from gitlab_pypi_proxy.sources.simple_index import parse_json_names, parse_json_page
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed
from tests.waiting import async_wait_until

URL = "https://index.example/simple/big/"


async def _loop_events(tmp_path: Path, files: int) -> int:
    """Profiler events on the event loop's thread while a page of `files` wheels (two sources
    listing them, some versions yanked by the configuration) is served and rendered."""
    public, mirror = FakeSource("public"), FakeSource("mirror")
    for n in range(files):
        public.add("big", f"big-1.{n}-py3-none-any.whl", f"{n:064x}")
        mirror.add("big", f"big-1.{n}-py3-none-any.whl", f"{n:064x}")
    index = composed(
        tmp_path, private=[public, mirror], yanked={"public": {"big": frozenset({"1.1", "1.7"})}}
    )
    events = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal events
        events += 1

    await index.index.project_page("big")  # the first: fetched and kept
    # what the first page started in the background (where its files are, the newest wheels'
    # metadata) ends before counting: its timing, not the page, would decide what is counted
    await index.tasks.settled()
    await index.metadata.tasks.settled()
    sys.setprofile(count)  # this thread only: the event loop's
    try:
        page = await index.index.project_page("big")
        for media in (JSON, HTML):
            await asyncio.to_thread(render, page, media)  # as http/app.py renders
    finally:
        sys.setprofile(None)
        await index.close()
    assert len(page.files) == files and page.files[1].yanked is True
    return events


async def test_the_event_loop_does_not_work_per_file(tmp_path: Path) -> None:
    few = await _loop_events(tmp_path / "few", 500)
    many = await _loop_events(tmp_path / "many", 1500)
    assert many - few < 500  # not one event per file more


def _largest_calls(
    monkeypatch: pytest.MonkeyPatch, cls: type, method: str, size: Callable[..., int]
) -> list[int]:
    """Record the size of what every call of `cls.method` handles."""
    sizes: list[int] = []
    original = getattr(cls, method)

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        sizes.append(size(args, kwargs, result))
        return result

    monkeypatch.setattr(cls, method, wrapped)
    return sizes


def _json_page(files: int) -> bytes:
    entries = [
        {
            "filename": f"big-1.{n}.tar.gz",
            "url": f"big-1.{n}.tar.gz",
            "hashes": {"sha256": f"{n:064x}"},
            "requires-python": ">=3.8",
        }
        for n in range(files)
    ]
    return json.dumps({"meta": {"api-version": "1.0"}, "name": "big", "files": entries}).encode()


def test_a_json_page_is_decoded_an_entry_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _json_page(10_000)

    def consumed(args: tuple, kwargs: dict, result: tuple[object, int]) -> int:
        start = args[1] if len(args) > 1 else kwargs.get("idx", 0)
        return result[1] - start

    sizes = _largest_calls(monkeypatch, json.JSONDecoder, "raw_decode", consumed)
    files, _, _ = parse_json_page(body, URL)
    assert len(files) == 10_000
    assert max(sizes) < 1000 < len(body)


def test_a_json_root_index_is_decoded_a_name_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"projects": [{"name": f"p{n}"} for n in range(10_000)]}).encode()
    sizes = _largest_calls(
        monkeypatch, json.JSONDecoder, "raw_decode", lambda a, k, r: r[1] - (a[1] if a[1:] else 0)
    )
    assert len(parse_json_names(body)) == 10_000
    assert max(sizes) < 100


def test_an_html_page_is_parsed_a_piece_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    anchors = "".join(
        f'<a href="big-1.{n}.tar.gz#sha256={n:064x}">big-1.{n}.tar.gz</a>\n' for n in range(15_000)
    )
    body = f"<html><body>{anchors}</body></html>".encode()
    fed = _largest_calls(monkeypatch, HTMLParser, "feed", lambda a, k, r: len(a[0]))
    links, _ = parse_project_document(decoded(body, "utf-8"), URL)
    assert len(links) == 15_000
    assert max(fed) <= 2**20 < len(body)


def test_a_page_is_rendered_an_entry_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    files = tuple(
        DistFile(f"big-1.{n}.tar.gz", f"{n:064x}", "public", "u", requires_python=">=3.8")
        for n in range(10_000)
    )
    sizes = _largest_calls(monkeypatch, json.JSONEncoder, "encode", lambda a, k, r: len(r))
    body = render(ProjectPage("big", files, ("public",)), JSON).body
    assert len(json.loads(body)["files"]) == 10_000
    assert max(sizes) < len(body) / 10  # the document's head (its versions), or one entry


async def test_a_worker_keeps_what_it_holds_at_start_out_of_the_collectors_way(
    tmp_path: Path,
) -> None:
    """A full collection while a big page is parsed scans the page's objects, not the ~70,000
    of the program's modules and services (tens of ms the event loop would wait each time)."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\ndirectory = "{tmp_path / "cache"}"\n[gitlab]\nurl = "https://gitlab.example"\n'
        '[[sources]]\nname = "platform"\ngitlab_project = 11\n'
    )
    app = create_app(load(config))
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


async def test_a_worker_runs_its_blocking_work_on_a_few_threads(tmp_path: Path) -> None:
    """Each thread holds a connection to every SQLite database it touched: a worker's threads
    are CPU_SLOTS for big pages and one for the rest, not asyncio's cores + 4."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\ndirectory = "{tmp_path / "cache"}"\n[gitlab]\nurl = "https://gitlab.example"\n'
        '[[sources]]\nname = "platform"\ngitlab_project = 11\n'
    )
    app = create_app(load(config))
    release = threading.Event()
    used: set[str] = set()

    def blocked() -> None:
        used.add(threading.current_thread().name)
        release.wait(30)

    try:
        async with app.router.lifespan_context(app):
            # every task blocks: the pool starts a thread for each one it can
            running = [asyncio.ensure_future(asyncio.to_thread(blocked)) for _ in range(10)]
            await async_wait_until(lambda: len(used) >= THREADS, "the threads starting")
            release.set()
            await asyncio.gather(*running)
    finally:
        release.set()
        gc.unfreeze()
    assert len(used) == THREADS == CPU_SLOTS + 1
