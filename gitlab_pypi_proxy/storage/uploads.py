"""The last uploads, for the status page: a short list on disk that every worker shares.

The upload route calls `await services.uploads.record(Upload(...))` after GitLab accepted a file
(it counts every attempt in the uploads metric itself). While the cache directory cannot be
written, uploads are listed from this process's memory instead.

The list is one plain JSON record (gitlab_pypi_proxy.storage.record_format) with a format
version; a list of another version, or one that cannot be read, is lost: it only shows what was
uploaded lately, and the next uploads fill it again.
"""

import asyncio
import collections
import time
from dataclasses import dataclass, field
from pathlib import Path

from gitlab_pypi_proxy.storage import record_format
from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.record_format import BadRecord, dropped
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

KEEP = 20
_FORMAT = 1
_LIST = "uploads"  # the one record's key


@dataclass(frozen=True)
class Upload:
    filename: str
    source: str
    user: str
    at: float = field(default_factory=time.time)


class RecentUploads:
    def __init__(self, directory: Path) -> None:
        self._disk = open_cache(directory / "recent-uploads", _FORMAT, eviction_policy="none")
        self._writes = writes_for(directory)
        self._unkept: collections.deque[Upload] = collections.deque(maxlen=KEEP)

    async def record(self, upload: Upload) -> None:
        try:
            await asyncio.to_thread(self._append, upload)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "recording an upload")
            self._unkept.append(upload)

    async def latest(self) -> list[Upload]:
        """Newest first."""
        kept = await asyncio.to_thread(self._kept)
        return sorted([*kept, *self._unkept], key=lambda u: u.at, reverse=True)[:KEEP]

    def close(self) -> None:
        self._disk.close()

    def _append(self, upload: Upload) -> None:
        with self._disk.transact():
            kept = [*self._kept(), upload][-KEEP:]
            rows = tuple((u.filename, u.source, u.user, u.at) for u in kept)
            self._disk.set(_LIST, record_format.encode(rows))

    def _kept(self) -> list[Upload]:
        """The stored list, oldest first (empty when it cannot be read: then it is dropped)."""
        data = self._disk.get(_LIST)
        if data is None:
            return []
        try:
            return [_upload(*row) for row in record_format.decode(data)]
        except (BadRecord, TypeError, ValueError) as exc:
            dropped("uploads", exc)
            return []


def _upload(filename: object, source: object, user: object, at: object) -> Upload:
    if not (isinstance(filename, str) and isinstance(source, str) and isinstance(user, str)):
        raise BadRecord("an upload of other types")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise BadRecord(f"an upload at {type(at).__name__}")
    return Upload(filename, source, user, float(at))
