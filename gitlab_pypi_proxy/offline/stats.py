"""`cache stats`: what the cache holds, how old it is, and how often the server found a file in it.

The hit ratio counts the server's file lookups (a file request answered from disk, or not) with
counters kept in the cache's own database: every worker adds its counts there in batches (within
about 2 seconds, and when it stops: gitlab_pypi_proxy.storage.usage), they are kept across restarts,
so "since start" means since the cache directory was created. The command line tools (verify,
export, prefetch) do not count."""

from datetime import UTC, datetime

from gitlab_pypi_proxy.index.cached import NamesKey, PageKey, parse_key
from gitlab_pypi_proxy.storage.blobs import BlobStore
from gitlab_pypi_proxy.storage.pages import Entry, PageStore


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stats_lines(pages: PageStore, blobs: BlobStore) -> list[str]:
    """Blocking: reads every page entry and the file table once."""
    files = blobs.stats()
    page_count, names_count, page_times = 0, 0, []
    for raw, value in pages.items():
        key = parse_key(raw)
        if key is not None and isinstance(value, Entry):
            page_count += isinstance(key, PageKey)
            names_count += isinstance(key, NamesKey)
            page_times.append(value.fetched_at)
    hits, misses = files.hits, files.misses
    lookups = hits + misses
    ratio = f"{100 * hits / lookups:.1f}%" if lookups else "-"
    return [
        f"files: {files.entries} entries, {files.bytes} bytes on disk",
        f"files stored: oldest {_when(files.oldest)}, newest {_when(files.newest)}",
        f"index pages: {page_count} project pages, {names_count} project lists",
        "index pages fetched: oldest "
        f"{_when(min(page_times, default=None))}, newest {_when(max(page_times, default=None))}",
        f"hit ratio: {ratio} ({hits} hits, {misses} misses of the server's file lookups)",
    ]
