"""The seam for what the proxy's workers share beyond the stores: a lock per key, the news that
index records changed, and small values updated atomically.

Today's implementation is gitlab_pypi_proxy.storage.local_coordinator (flock, a generation file,
small state files under the cache directory): the workers of one machine. Another (Redis: a lock
with a lease, pub/sub, atomic updates) would let replicas share the same three without any caller
changing. Nothing outside gitlab_pypi_proxy.storage and the composition root knows which one runs.
"""

import threading
import zlib
from collections.abc import Callable, Hashable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Protocol, TypeVar

from gitlab_pypi_proxy.storage.blobs import CacheUnwritable

T = TypeVar("T")

# A project's own news (its GitLab files' upload details, or its wheels' metadata, arrived)
# reaches the rendered pages of the names in its bucket, not every page: a cold install learns
# them project after project, wheel after wheel.
PAGE_BUCKETS = 64


def page_bucket(name: str) -> int:
    """The bucket of a project's news, for its normalized `name`."""
    return zlib.crc32(name.encode()) % PAGE_BUCKETS


class HeldElsewhere(CacheUnwritable):
    """Another replica has held a download's lock past the bound a follower waits: the file is
    streamed from upstream, verified, without keeping."""


class SharedValue(Protocol):
    """A few bytes every worker reads and changes atomically (the GitLab request budget, the
    operator's yanks)."""

    def update(self, change: Callable[[bytes | None], tuple[bytes, T]]) -> T:
        """Apply `change` to the current value (None before the first update), store what it
        returns first and return the rest; no other update runs in between (blocking: call it
        in a thread). Raises what `change` raises (the value is then unchanged) and nothing
        else: a value that cannot be shared is kept in this process from then on."""
        ...

    def read(self) -> bytes | None:
        """The current value, None before the first update (blocking). Raises nothing."""
        ...

    def close(self) -> None: ...


class ProcessValue:
    """A shared value that only this process shares: one process needs no more (tests), and a
    coordinator keeps a value here when it cannot share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: bytes | None = None

    def update(self, change: Callable[[bytes | None], tuple[bytes, T]]) -> T:
        with self._lock:
            self._value, result = change(self._value)
            return result

    def read(self) -> bytes | None:
        return self._value

    def close(self) -> None:
        pass


class Coordinator(Protocol):
    def generation(self, page: str = "") -> Hashable:
        """Changes whenever any worker announced a change of everything (`changed()`), and,
        given a project's normalized name, of that project (`changed(page)`; of the others in
        its bucket too). Cheap: a memo asks it on every request and compares the answer with
        the one it was filled under. Raises nothing."""
        ...

    async def changed(self, page: str = "") -> None:
        """Tell every worker that index records changed: their memos are out of date, or only
        what they rendered of project `page` (normalized) when only its GitLab files' upload
        details arrived. Never fails: when the news cannot be shared, at least this worker's
        generation changes."""
        ...

    def changed_now(self) -> None:
        """`changed`, for the command line (blocking). Never fails, as `changed`."""
        ...

    def enrichment(self, page: str) -> Hashable:
        """Changes whenever a worker announced that project `page`'s files gained what its
        pages may advertise (`enriched(page)`; of the others in its bucket too). A page
        rendered before is as right as it was, only less complete: it may be served while the
        new one is rendered. Cheap; raises nothing."""
        ...

    async def enriched(self, page: str) -> None:
        """Tell every worker that project `page` (normalized) gained core metadata for its
        files. Never fails: when the news cannot be shared, pages advertise it once their
        records expire."""
        ...

    def lock(
        self, key: str, progress: Callable[[], int] | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold `key` exclusively among every worker, waiting for another holder without
        blocking the event loop (a download of one digest runs once). `progress`, while held,
        tells how far the holder's work has come (bytes downloaded): a replica waiting for it
        waits as long as that moves. Raises OSError when the lock cannot be had at all: the
        caller then goes on without what it guards; HeldElsewhere when another replica holds it
        past a bound with no progress."""
        ...

    def lock_now(self, key: str) -> AbstractContextManager[None]:
        """`lock`, for the command line (blocking). Raises OSError when the lock cannot be
        had."""
        ...

    def value(self, name: str, size: int = ...) -> SharedValue:
        """The shared value called `name`, of at most `size` bytes (a few KiB unless told).
        Raises nothing: one that cannot be shared is kept in this process."""
        ...

    def clean(self) -> int:
        """Remove what holders that died left behind (blocking; at start). How many. Raises
        OSError when the locks' directory cannot be read."""
        ...

    def close(self) -> None: ...
