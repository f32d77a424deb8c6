"""Pages one worker rendered, for the other workers of its machine: kept on its disk under what
the page answers, the generation it was rendered under as every worker reads it (the
LocalCoordinator's stamps) and what else the worker renders from (the proxy's version, its
settings, its advisories: a page rendered before a restart with other ones is never found), until
its records expire. A worker asked for a page another one rendered reads its gzip copy (the
kernel's page cache, a thread hop) instead of decoding and rendering thousands of files once
more: about 0.3 s of CPU for the biggest public pages, per worker. Bounded by bytes, the oldest
stored going first. The values are bytes the http layer makes; nothing here renders. With Redis,
whose news each process counts, there is none
(gitlab_pypi_proxy.storage.stores.Stores.rendered_pages)."""

import asyncio
import hashlib
import time
from collections.abc import Hashable

from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.record_format import BadRecord
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

_FORMAT = 1
SIZE_LIMIT = 128 * 2**20


class RenderedPages:
    def __init__(self, coordinator: LocalCoordinator) -> None:
        self.coordinator = coordinator
        self._disk = open_cache(
            coordinator.directory / "rendered",
            _FORMAT,
            size_limit=SIZE_LIMIT,
            eviction_policy="least-recently-stored",
        )
        self._writes = writes_for(coordinator.directory)

    def close(self) -> None:
        self._disk.close()

    def key(self, what: Hashable, generation: Hashable, rendering: str) -> str | None:
        """The disk's key for the page `what` (a page memo's key) rendered under `generation`
        (the coordinator's, read before the page's inputs were) from `rendering` (what else
        the worker renders pages from: its settings, its advisories), or None when this
        worker's generation is its own (news it could not share): then it shares nothing."""
        shared = self.coordinator.shared_generation(generation)
        if shared is None:
            return None
        return hashlib.sha256(
            repr((shared, rendering, _same_everywhere(what))).encode()
        ).hexdigest()

    async def get(self, key: str) -> tuple[bytes, float] | None:
        """The page's bytes and the time.time() until which they are fresh, or None."""
        try:
            found = await asyncio.to_thread(self._disk.get, key, expire_time=True)
        except (BadRecord, *WRITE_ERRORS):
            return None  # rendered here instead
        value, until = found
        if not isinstance(value, bytes) or until is None:
            return None
        return value, until

    async def put(self, key: str, value: bytes, until: float) -> None:
        """Keep `value` until `until` (time.time()); a disk that will not take it shares
        nothing (the other workers render the page themselves)."""
        try:
            await asyncio.to_thread(self._keep, key, value, until)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "sharing a rendered page")

    def _keep(self, key: str, value: bytes, until: float) -> None:
        expire = until - time.time()  # here: diskcache adds it to its own clock's now
        if expire > 0:
            self._disk.set(key, value, expire=expire)


def _same_everywhere(what: Hashable) -> Hashable:
    """`what` with its sets sorted: their order differs between processes."""
    if isinstance(what, frozenset | set):
        return ("set", *sorted(map(repr, what)))
    if isinstance(what, tuple):
        return tuple(_same_everywhere(part) for part in what)
    return what
