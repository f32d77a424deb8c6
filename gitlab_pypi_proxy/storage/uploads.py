"""The last uploads, for the status page: a short list on disk that every worker shares.

The upload route calls `await services.uploads.record(Upload(...))` after GitLab accepted a file
(it counts every attempt in the uploads metric itself). While the cache directory cannot be
written, uploads are listed from this process's memory instead.
"""

import asyncio
import collections
import time
from dataclasses import dataclass, field
from pathlib import Path

import diskcache

from gitlab_pypi_proxy.storage import pickles
from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

KEEP = 20


@dataclass(frozen=True)
class Upload:
    filename: str
    source: str
    user: str
    at: float = field(default_factory=time.time)


class RecentUploads:
    def __init__(self, directory: Path) -> None:
        cache = open_cache(directory / "recent-uploads", eviction_policy="none", disk=pickles.Disk)
        self._deque = diskcache.Deque.fromcache(cache, maxlen=KEEP)
        self._writes = writes_for(directory)
        self._unkept: collections.deque[Upload] = collections.deque(maxlen=KEEP)

    async def record(self, upload: Upload) -> None:
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
