"""A worker's rendered pages are bounded by bytes, not only by count: many big pages (the largest
public projects render to MiBs) never hold more than page_memo.MAX_BYTES."""

import time
from pathlib import Path

from gitlab_pypi_proxy.http import page_memo
from gitlab_pypi_proxy.http.page_memo import PageMemo, memo_key
from gitlab_pypi_proxy.http.serialize import Rendered
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator

MIB = 2**20


def _page(size: int) -> Rendered:
    return Rendered(b"x" * size, "text/html", '"e"', b"z" * (size // 10))


def test_big_pages_are_held_within_the_byte_bound_newest_first(tmp_path: Path) -> None:
    memo = PageMemo(LocalCoordinator(tmp_path))
    generation = memo.generation()
    fresh = time.time() + 300
    count = page_memo.MAX_BYTES // (3 * MIB) + 5  # well past the bound: 3.3 MiB each
    keys = [memo_key(f"big-{n}", "text/html", None) for n in range(count)]
    for key in keys:
        memo.put(key, _page(3 * MIB), fresh, generation)
    held = {key: page for key in keys if (page := memo.get(key, generation)) is not None}
    assert sum(len(p.body) + len(p.gzipped or b"") for p in held.values()) <= page_memo.MAX_BYTES
    assert 0 < len(held) < len(keys)
    assert list(held) == keys[-len(held) :]  # the newest stay, the oldest went


def test_a_page_bigger_than_the_bound_is_answered_but_not_held(tmp_path: Path) -> None:
    memo = PageMemo(LocalCoordinator(tmp_path))
    generation = memo.generation()
    small = memo_key("small", "text/html", None)
    memo.put(small, _page(1024), time.time() + 300, generation)
    huge = memo_key("huge", "text/html", None)
    memo.put(huge, _page(page_memo.MAX_BYTES), time.time() + 300, generation)
    assert memo.get(huge, generation) is None
    assert memo.get(small, generation) is not None  # nothing dropped for a page never held
