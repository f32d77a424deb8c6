"""The last uploads, for the status page: a short list on disk that every worker shares.

The upload route calls `await services.uploads.record(Upload(...))` after GitLab accepted a file,
and `count_upload(source, outcome)` for every attempt (the uploads metric). While the cache
directory cannot be written, uploads are listed from this process's memory instead.
"""

import asyncio
import collections
import time
from dataclasses import dataclass, field
from pathlib import Path

import diskcache

from proxy import metrics
from proxy.storage import pickles
from proxy.storage.writable import WRITE_ERRORS, writes_for

KEEP = 20


@dataclass(frozen=True)
class Upload:
    filename: str
    source: str
    user: str
    at: float = field(default_factory=time.time)


def count_upload(source: str, outcome: str) -> None:
    """outcome: "ok", "conflict", "refused", "invalid", "upstream_error"."""
    metrics.UPLOADS.labels(source, outcome).inc()


class RecentUploads:
    def __init__(self, directory: Path) -> None:
        cache = diskcache.Cache(
            str(directory / "recent-uploads"), eviction_policy="none", disk=pickles.Disk
        )
        self._deque = diskcache.Deque.fromcache(cache, maxlen=KEEP)
        self._writes = writes_for(directory)
        self._unkept: collections.deque[Upload] = collections.deque(maxlen=KEEP)

    async def record(self, upload: Upload) -> None:
        count_upload(upload.source, "ok")
        try:
            await asyncio.to_thread(self._deque.append, upload)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "recording an upload")
            self._unkept.append(upload)

    async def latest(self) -> list[Upload]:
        """Newest first."""
        kept = await asyncio.to_thread(list, self._deque)
        return sorted([*kept, *self._unkept], key=lambda u: u.at, reverse=True)[:KEEP]

    def close(self) -> None:
        self._deque.cache.close()
