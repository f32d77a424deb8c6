"""Index records shared by replicas (gitlab_pypi_proxy.storage.records): each machine's own records
(gitlab_pypi_proxy.storage.pages) in front, Redis behind them for every replica.

A record is written to both and read from both, the newer winning (one only Redis has is copied
in): a replica started while GitLab is down serves what any replica fetched. Forgetting a record
deletes it in both, and a broadcast (gitlab_pypi_proxy.storage.redis_coordinator) makes every
other replica forget its copy before its memos move on. Where files are stays per machine (a
file URL falls back to asking GitLab by digest); delivery records are shared. Records go into
Redis in the cache directory's plain format, under names that carry its version: reading one
never runs code, and one that cannot be decoded is dropped, counted, and fetched again. While
Redis is down, the machine's records serve alone."""

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any

from gitlab_pypi_proxy.aio import BYTES_PER_FILE, off_loop
from gitlab_pypi_proxy.storage.pages import Entry, PageStore, decode, encode
from gitlab_pypi_proxy.storage.record_format import FORMAT, BadRecord, dropped, encode_key
from gitlab_pypi_proxy.storage.redis_coordinator import RedisCoordinator

PREFIX = f"gitlab-pypi-proxy:record:{FORMAT}:"  # records of another format are not read
KEEP_SECONDS = 30 * 86400  # a record nobody refreshed for this long leaves Redis


def _name(key: Hashable) -> str:
    return PREFIX + encode_key(key)


def _entry(data: bytes | None) -> Entry | None:
    if data is None:
        return None
    try:
        value = decode(data)
    except BadRecord as exc:
        dropped("shared records", exc)
        return None
    return value if isinstance(value, Entry) else None


class SharedRecords:
    def __init__(self, local: PageStore, coordinator: RedisCoordinator) -> None:
        self.local, self.coordinator = local, coordinator
        self.writes = local.writes
        self._listeners: list[Callable[[list[Hashable]], Awaitable[None]]] = []
        coordinator.on_forget(self._forget_here)

    def __len__(self) -> int:
        here = len(self.local)
        if here:
            return here
        redis = self.coordinator.sync
        found = self.coordinator.call_now(
            "counting records", lambda: next(redis.scan_iter(PREFIX + "*", count=100), None)
        )
        return 1 if found else 0

    async def get(self, key: Hashable) -> Entry | None:
        client = self.coordinator.client
        here, shared = await asyncio.gather(
            self.local.get(key),
            self.coordinator.call("reading a record", lambda: client.get(_name(key))),
        )
        # a page of thousands of files is milliseconds of CPU to decode: not on the event loop
        there = await off_loop(len(shared or b"") // BYTES_PER_FILE, _entry, shared)
        if there is not None and (here is None or there.fetched_at > here.fetched_at):
            await self.local.put(key, there, shared)
            return there
        return here

    async def has(self, key: Hashable) -> bool:
        if await self.local.has(key):
            return True
        client = self.coordinator.client
        return bool(
            await self.coordinator.call("reading a record", lambda: client.exists(_name(key)))
        )

    async def put(self, key: Hashable, entry: Entry) -> None:
        data = await asyncio.to_thread(encode, entry)  # as get: not on the event loop
        client = self.coordinator.client
        await asyncio.gather(
            self.local.put(key, entry, data),  # encoded once, for both
            self.coordinator.call(
                "keeping a record", lambda: client.set(_name(key), data, ex=KEEP_SECONDS)
            ),
        )

    async def forget(self, *keys: Hashable) -> None:
        client = self.coordinator.client
        names = [_name(k) for k in keys]
        if names:
            await self.coordinator.call("forgetting records", lambda: client.delete(*names))
        await self.local.forget(*keys)
        await self.coordinator.broadcast(list(keys))

    async def _forget_here(self, keys: list[Hashable]) -> None:
        await asyncio.to_thread(self.local.delete_now, *keys)
        for listener in self._listeners:
            await listener(keys)

    def on_forgotten(self, listener: Callable[[list[Hashable]], Awaitable[None]]) -> None:
        """`listener` hears every worker of every replica forget keys (the broadcast reaches
        this worker too, for its own)."""
        self._listeners.append(listener)

    # --- blocking, for the command line and the deliveries -------------------------------------

    def get_now(self, key: Hashable) -> Any:
        return self.local.get_now(key)

    def set_now(self, key: Hashable, value: Any) -> None:
        self.local.set_now(key, value)

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        return self.local.items()

    def keep(self, key: Hashable, entry: Entry) -> bool:
        kept = self.local.keep(key, entry)
        if kept:
            data = encode(entry)
            redis = self.coordinator.sync
            self.coordinator.call_now(
                "keeping a record", lambda: redis.set(_name(key), data, ex=KEEP_SECONDS)
            )
        return kept

    def announce(self) -> None:
        self.coordinator.changed_now()

    def close(self) -> None:
        self.local.close()
