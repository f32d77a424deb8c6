"""Index records on one machine: every source's answers about names (pages, project lists, shadow
checks), where files are and which sources delivered them, by key, each stored with the time it
was fetched (gitlab_pypi_proxy.storage.records is the seam).

Records live in diskcache under the cache directory, so they survive restarts and are shared by
worker processes; every disk call runs in a thread. What they mean and how long they are fresh is
gitlab_pypi_proxy.index.cached's business. Forgetting records tells every worker, through the
coordinator, that what was rendered from them is out of date. Records are plain JSON
(gitlab_pypi_proxy.storage.record_format); one that cannot be decoded is dropped: index records
can always be fetched again. When the disk will not take a write, stored records are still read
and what it would not take is held in this process instead (bounded)."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.storage import record_format
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.disk_caches import FORMAT_KEY, open_cache
from gitlab_pypi_proxy.storage.record_format import BadRecord, decode_key, dropped, encode_key
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

_PAGES_SIZE_LIMIT = 2**30
_HELD_ENTRIES = 10_000
_FORGOTTEN = object()  # the value of a record forgotten while the disk could not drop it


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    fetched_at: float


def encode(value: Any) -> bytes:
    """A record's bytes: an Entry (its value and time), or the bare value of a record kept
    without one (where files are). Raises TypeError for a value the format does not keep."""
    if isinstance(value, Entry):
        return record_format.encode((value.value, value.fetched_at))
    return record_format.encode((value, None))


def decode(data: bytes | str) -> Any:
    """What `encode` made `data` of. Raises BadRecord for anything else."""
    pair = record_format.decode(data)
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise BadRecord("not a record of a value and a time")
    value, fetched_at = pair
    if fetched_at is None:
        return value
    if isinstance(fetched_at, bool) or not isinstance(fetched_at, int | float):
        raise BadRecord(f"fetched at {type(fetched_at).__name__}")
    return Entry(value, float(fetched_at))


class PageStore:
    def __init__(self, directory: Path, coordinator: Coordinator) -> None:
        self._disk = open_cache(
            directory / "pages",
            record_format.FORMAT,
            size_limit=_PAGES_SIZE_LIMIT,
            eviction_policy="least-recently-stored",
        )
        self.coordinator = coordinator
        self.writes = writes_for(directory)
        # What the disk would not take, newest last; touched on the event loop only.
        self._held: TTLMemo[Hashable, Entry] = TTLMemo(_HELD_ENTRIES)

    def close(self) -> None:
        self._disk.close()

    def __len__(self) -> int:
        return len(self._disk) - 1  # its format's version is no record

    async def get(self, key: Hashable) -> Entry | None:
        """The record: the stored one, or this process's if the disk would not take it."""
        stored = await asyncio.to_thread(self._entry, key)
        held = self._held.get(key)
        if held is None or (stored is not None and stored.fetched_at > held.fetched_at):
            return stored
        return None if held.value is _FORGOTTEN else held

    async def has(self, key: Hashable) -> bool:
        held = self._held.get(key)
        if held is not None:
            return held.value is not _FORGOTTEN
        return await asyncio.to_thread(self._disk.__contains__, encode_key(key))

    async def put(self, key: Hashable, entry: Entry, data: bytes | None = None) -> None:
        """Store `entry` (`data`: its encoding, when the caller has it), or hold it in this
        process when the disk will not take it."""
        try:
            # encoded in the thread too: a page of thousands of files is milliseconds of CPU
            await asyncio.to_thread(
                lambda: self._disk.set(encode_key(key), encode(entry) if data is None else data)
            )
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
            self._disk.delete(encode_key(key))

    def _entry(self, key: Hashable) -> Entry | None:
        found = self._decoded(encode_key(key))
        return found if isinstance(found, Entry) else None

    def _decoded(self, name: str) -> Any:
        """The record stored under `name`, decoded (an Entry, or a value stored bare);
        None when there is none or it cannot be read (then it is dropped)."""
        try:
            data = self._disk.get(name)
            return None if data is None else decode(data)
        except BadRecord as exc:
            dropped("index records", exc)
            with contextlib.suppress(*WRITE_ERRORS):
                self._disk.delete(name)
            return None

    def delete_now(self, *keys: Hashable) -> None:
        """Delete records here only, without news (blocking): another worker or replica
        forgot them and tells the rest itself."""
        self._delete(keys)

    # --- blocking, for the command line and the deliveries -------------------------------------

    def get_now(self, key: Hashable) -> Any:
        """The stored value of `key` (blocking)."""
        return self._decoded(encode_key(key))

    def set_now(self, key: Hashable, value: Any) -> None:
        """Store `value` under `key` (blocking)."""
        self._disk.set(encode_key(key), encode(value))

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Every stored (key, value) (blocking: for the command line)."""
        for name in list(self._disk.iterkeys()):
            if name == FORMAT_KEY:
                continue
            value = self._decoded(name)
            if value is not None:
                yield decode_key(name), value

    def keep(self, key: Hashable, entry: Entry) -> bool:
        """Store `entry` unless a newer one is stored (blocking: for the command line).

        Call `announce()` after the last one, so running workers drop their memos.
        """
        name = encode_key(key)
        with self._disk.transact():
            current = self._decoded(name)
            if isinstance(current, Entry) and current.fetched_at >= entry.fetched_at:
                return False
            self._disk.set(name, encode(entry))
            return True

    def announce(self) -> None:
        """Tell every worker sharing the records that they changed (blocking)."""
        self.coordinator.changed_now()
