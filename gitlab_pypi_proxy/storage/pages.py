"""Index records: every source's answers about names (pages, project lists, shadow checks) and
where files are (gitlab_pypi_proxy.storage.locations), by the keys their owners make, each stored
with the time it was fetched.

Records live in diskcache (SQLite + files), so they survive restarts and are shared by worker
processes; every disk call runs in a thread. What they mean and how long they are fresh is not
known here (gitlab_pypi_proxy.index.cached decides). Forgetting records tells every worker, through
the coordinator, that what was rendered from them is out of date.

When the cache directory cannot be written (disk full, read-only), stored records are still
read, and what the disk would not take is held in this process instead (bounded): loaded pages,
and forgotten records, so that an upload shows at once on the worker that took it (other workers
see it once their copy is older than its freshness).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.storage import pickles
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

_PAGES_SIZE_LIMIT = 2**30
_HELD_ENTRIES = 10_000
_FORGOTTEN = object()  # the value of a record forgotten while the disk could not drop it


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    fetched_at: float


class PageStore:
    def __init__(self, directory: Path, coordinator: Coordinator) -> None:
        self._disk = open_cache(
            directory / "pages",
            size_limit=_PAGES_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
            disk=pickles.Disk,
        )
        self.coordinator = coordinator
        self.writes = writes_for(directory)
        # What the disk would not take, newest last; touched on the event loop only.
        self._held: TTLMemo[Hashable, Entry] = TTLMemo(_HELD_ENTRIES)

    def close(self) -> None:
        self._disk.close()

    def __len__(self) -> int:
        return len(self._disk)

    async def get(self, key: Hashable) -> Entry | None:
        """The record: the stored one, or this process's if the disk would not take it."""
        stored = await asyncio.to_thread(self._disk.get, key)
        held = self._held.get(key)
        if held is None or (stored is not None and stored.fetched_at > held.fetched_at):
            return stored
        return None if held.value is _FORGOTTEN else held

    async def put(self, key: Hashable, entry: Entry) -> None:
        """Store `entry`, or hold it in this process when the disk will not take it."""
        try:
            await asyncio.to_thread(self._disk.set, key, entry)
        except WRITE_ERRORS as exc:
            self.writes.failed(exc, "keeping an index page")
            self._held.set(key, entry)
        else:
            self._held.pop(key, None)

    async def forget(self, *keys: Hashable) -> None:
        """Forget records, in this worker and every other one sharing them; their renderings
        are out of date everywhere."""
        try:
            await asyncio.to_thread(self._delete, keys)
        except WRITE_ERRORS as exc:
            self.writes.failed(exc, "forgetting index pages")
            now = time.time()
            for key in keys:
                self._held.set(key, Entry(_FORGOTTEN, now))
        await self.coordinator.changed()

    def on_forgotten(self, listener: Callable[[list[Hashable]], Awaitable[None]]) -> None:
        """Nothing to hear: the workers of one machine share the cache directory, so what the
        forgetting worker drops beside the records there is dropped for all of them."""

    def _delete(self, keys: tuple[Hashable, ...]) -> None:
        for key in keys:
            self._disk.delete(key)

    def delete_now(self, *keys: Hashable) -> None:
        """Delete records here only, without news (blocking): another worker or replica
        forgot them and tells the rest itself."""
        self._delete(keys)

    # --- blocking, for the command line and the locations -------------------------------------

    def get_now(self, key: Hashable) -> Any:
        """The stored value of `key` (blocking)."""
        return self._disk.get(key)

    def set_now(self, key: Hashable, value: Any) -> None:
        """Store `value` under `key` (blocking)."""
        self._disk.set(key, value)

    def transact(self) -> AbstractContextManager[Any]:
        """Reads and writes made inside are one transaction (blocking): keep it short, a few
        hundred records, so that a big change does not hold up every other write."""
        return self._disk.transact()

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Every stored (key, value) (blocking: for the command line)."""
        for key in list(self._disk.iterkeys()):
            value = self._disk.get(key)
            if value is not None:
                yield key, value

    def keep(self, key: Hashable, entry: Entry) -> bool:
        """Store `entry` unless a newer one is stored (blocking: for the command line).

        Call `announce()` after the last one, so running workers drop their memos.
        """
        with self._disk.transact():
            current = self._disk.get(key)
            if isinstance(current, Entry) and current.fetched_at >= entry.fetched_at:
                return False
            self._disk.set(key, entry)
            return True

    def announce(self) -> None:
        """Tell every worker sharing the records that they changed (blocking)."""
        self.coordinator.changed_now()
