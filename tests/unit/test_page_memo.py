"""A worker's rendered pages are bounded by bytes, not only by count: many big pages (the largest
public projects render to MiBs) never hold more than page_memo.MAX_BYTES, and a page is kept as
its gzip copy alone (a fifth of its bytes), the plain bytes made again for a client without
gzip."""

import gzip
import hashlib
import os
import time
import tracemalloc
from pathlib import Path

from gitlab_pypi_proxy.http import page_memo
from gitlab_pypi_proxy.http.memo_hits import page_answer
from gitlab_pypi_proxy.http.page_memo import PageMemo, memo_key
from gitlab_pypi_proxy.http.serialize import JSON, KEEP_PLAIN, Rendered, render, render_page
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator

MIB = 2**20
_GZIPPED = gzip.compress(os.urandom(MIB), compresslevel=1)  # 1 MiB that does not compress


def _page(size: int) -> Rendered:
    """A page of `size` plain bytes whose gzip copy is MiBs too; each one its own bytes."""
    copies = max(1, size // MIB)
    return Rendered(b"x" * size, "text/html", '"e"', b"".join([_GZIPPED] * copies))


def _big_page(name: str, files: int = 4000, per_version: int = 1) -> ProjectPage:
    """A project page as a public index lists a big project's (digests do not compress)."""
    listed = tuple(
        DistFile(
            f"{name}-1.{n // per_version}-cp312-cp312-manylinux_{n % per_version}_x86_64.whl",
            os.urandom(32).hex(),
            "pypi",
            f"https://files.example/{n}.whl",
            requires_python=">=3.8",
            size=123456,
        )
        for n in range(files)
    )
    return ProjectPage(name, listed, ("pypi",))


def test_big_pages_are_held_within_the_byte_bound_newest_first(tmp_path: Path) -> None:
    memo = PageMemo(LocalCoordinator(tmp_path))
    generation = memo.generation("/")
    fresh = time.time() + 300
    count = page_memo.MAX_BYTES // (3 * MIB) + 5  # well past the bound: 3 MiB each
    keys = [memo_key(f"big-{n}", "text/html", None) for n in range(count)]
    for key in keys:
        memo.put(key, _page(3 * MIB), fresh, generation)
    held = {key: page for key in keys if (page := memo.get(key, generation)) is not None}
    assert sum(p.kept_bytes for p in held.values()) <= page_memo.MAX_BYTES
    assert 0 < len(held) < len(keys)
    assert list(held) == keys[-len(held) :]  # the newest stay, the oldest went


def test_a_page_bigger_than_the_bound_is_answered_but_not_held(tmp_path: Path) -> None:
    memo = PageMemo(LocalCoordinator(tmp_path))
    generation = memo.generation("/")
    small = memo_key("small", "text/html", None)
    memo.put(small, _page(1024), time.time() + 300, generation)
    huge = memo_key("huge", "text/html", None)
    memo.put(huge, _page(page_memo.MAX_BYTES + MIB), time.time() + 300, generation)
    assert memo.get(huge, generation) is None
    assert memo.get(small, generation) is not None  # nothing dropped for a page never held


def test_a_page_is_kept_gzipped_and_answered_plain_to_a_client_without_gzip(
    tmp_path: Path,
) -> None:
    memo = PageMemo(LocalCoordinator(tmp_path))
    generation = memo.generation("/")
    rendered = render(_big_page("botocore"), JSON)
    assert rendered.gzipped is not None and len(rendered.gzipped) < len(rendered.body) / 2
    key = memo_key("botocore", JSON, None)
    memo.put(key, rendered, time.time() + 300, generation)
    kept = memo.get(key, generation)
    assert kept is not None and kept.plain is None
    assert kept.kept_bytes == len(rendered.gzipped)
    status, headers, body = page_answer(kept, False, "GET", None, "gzip, deflate")
    assert (status, body) == (200, rendered.gzipped) and (b"content-encoding", b"gzip") in headers
    status, headers, body = page_answer(kept, False, "GET", None, None)
    assert (status, body) == (200, rendered.body)
    assert (b"content-length", str(len(rendered.body)).encode()) in headers
    assert all(name != b"content-encoding" for name, _ in headers)


def test_the_memo_of_many_big_pages_costs_its_worker_at_most_8_mib(tmp_path: Path) -> None:
    """What the memo holds, measured as the allocations it keeps: 40 pages of 4,000 files
    (1.4 MiB each as JSON), as a big install asks them."""
    rendered = render(_big_page("big"), JSON)
    memo = PageMemo(LocalCoordinator(tmp_path))
    generation = memo.generation("/")
    assert page_memo.MAX_BYTES <= 8 * MIB
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(40):
            copy = Rendered(  # the bytes a render of another page would make
                bytes(bytearray(rendered.body)),
                JSON,
                rendered.etag,
                bytes(bytearray(rendered.gzipped or b"")),
            )
            memo.put(memo_key(f"big-{n}", JSON, None), copy, time.time() + 300, generation)
            del copy
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= 8 * MIB + MIB // 4  # the bound, and the memo's own bookkeeping
    assert memo.get(memo_key("big-39", JSON, None), generation) is not None


def test_a_big_page_is_rendered_gzipped_without_its_plain_bytes_ever_held_whole() -> None:
    """A big project's page (15,000 files: 5 MiB as JSON) is hashed and gzipped as it is
    written: rendering holds the gzip copy and a batch of files, never the page's plain bytes
    (twice, once in batches and once joined) beside it."""
    page = _big_page("pydantic-core", 15_000, per_version=50)  # 300 versions of 50 wheels
    plain = render_page(page, JSON)
    tracemalloc.start()
    try:
        rendered = render(page, JSON)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rendered.plain is None and rendered.gzipped is not None
    assert rendered.body == plain and gzip.decompress(rendered.gzipped) == plain
    assert rendered.etag == f'"{hashlib.sha256(plain).hexdigest()[:32]}"'
    assert len(plain) > KEEP_PLAIN
    assert peak < len(plain), (len(plain), held, peak)  # held whole: twice that and more
