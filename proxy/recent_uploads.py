"""The last uploads, for the status page: a short list on disk that every worker shares.

The upload route calls `await services.uploads.record(Upload(...))` after GitLab accepted a file,
and `count_upload(source, outcome)` for every attempt (the uploads metric).
"""

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import diskcache

from proxy import metrics

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
        self._deque = diskcache.Deque(directory=str(directory / "recent-uploads"), maxlen=KEEP)

    async def record(self, upload: Upload) -> None:
        count_upload(upload.source, "ok")
        await asyncio.to_thread(self._deque.append, upload)

    async def latest(self) -> list[Upload]:
        """Newest first."""
        return await asyncio.to_thread(lambda: list(reversed(list(self._deque))))

    def close(self) -> None:
        self._deque.cache.close()
