"""Replicas coordinated through Redis (gitlab_pypi_proxy.storage.coordinator), over the local
coordinator of each machine (its workers) that it falls back to when Redis is down.

Locks: the machine's flock, then `SET lock:<key> <token> NX PX <lease>`, renewed while held; a
dead holder's lease runs out. A follower waits as long as the holder's progress (bytes, written
beside the lock) moves, at most `wait` seconds past the last move, then goes on without it
(HeldElsewhere: streamed verified, unkept). News: a publish on one channel, naming as JSON the
index records to forget, or the one project whose pages changed; every worker counts what it
hears (and each reconnection) in its generation, a project's news in its bucket. Shared values:
WATCH/MULTI. Redis failing never fails a request: the call falls back to the local coordinator,
is logged once per outage and counted (`shared_store_failures{store="redis"}`), `/readyz` says
degraded, and Redis rests a while. Messages name no credential. Imported only when
`[cluster] redis_url` is set."""

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import redis
import redis.asyncio

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.redact import mask_userinfo
from gitlab_pypi_proxy.storage.coordinator import (
    PAGE_BUCKETS,
    HeldElsewhere,
    ProcessValue,
    page_bucket,
)
from gitlab_pypi_proxy.storage.local_coordinator import VALUE_BYTES, LocalCoordinator
from gitlab_pypi_proxy.storage.record_format import BadRecord, decode_key, encode_key

log = logging.getLogger("proxy.storage")

T = TypeVar("T")

CHANNEL = "gitlab-pypi-proxy:changes"
LOCKS = "gitlab-pypi-proxy:lock:"
VALUES = "gitlab-pypi-proxy:value:"
LEASE_SECONDS = 30.0  # a dead holder's lock is taken over after this
WAIT_SECONDS = 60.0  # past this, a replica streams from upstream instead of waiting
RETRY_SECONDS = 2.0  # after a failure, Redis is not asked again for this long
_POLL = 0.05
_PROGRESS = ":progress"  # beside a lock's key: how far its holder's work has come
_ERRORS = (redis.RedisError, OSError, asyncio.TimeoutError)

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


def describe(exc: BaseException) -> str:
    return mask_userinfo(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


class RedisCoordinator:
    def __init__(
        self,
        url: str,
        local: LocalCoordinator,
        *,
        lease: float = LEASE_SECONDS,
        wait: float = WAIT_SECONDS,
    ) -> None:
        self.local = local
        self.lease, self.wait = lease, wait
        options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5}
        self.client = redis.asyncio.Redis.from_url(url, **options)
        self.sync = redis.Redis.from_url(url, **options)
        # the listener's own connection: idle for long, checked by pings
        self._listening = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=2, health_check_interval=5
        )
        self._news = 0
        self._page_news = [0] * PAGE_BUCKETS  # by bucket: news of one project's pages
        self._enriched = [0] * PAGE_BUCKETS  # by bucket: metadata one project's pages may add
        self._down_until = 0.0  # monotonic
        self._reason = ""
        self._health = threading.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._forget: Callable[[list[Hashable]], Awaitable[None]] | None = None
        self._values: dict[str, RedisValue] = {}

    # --- health -------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Worth asking now (not within RETRY_SECONDS of a failure)."""
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException, what: str) -> None:
        reason = describe(exc)
        with self._health:
            first = not self._reason
            self._down_until = time.monotonic() + RETRY_SECONDS
            self._reason = reason
        if first:
            log.warning("Redis failing (%s, while %s): this replica carries on alone", reason, what)
        metrics.SHARED_FAILURES.labels("redis").inc()
        metrics.SHARED_DOWN.labels("redis").set(1)

    def answered(self) -> None:
        if self._reason:
            with self._health:
                was, self._reason = self._reason, ""
            if was:
                log.warning("Redis answers again: replicas share again")
            metrics.SHARED_DOWN.labels("redis").set(0)

    def reachable(self) -> tuple[bool, str]:
        """As this process saw Redis last: (answering, why not). On the event loop, it starts
        the listener too, which finds out within a second."""
        self._listen()
        return not self._reason, self._reason

    def problem(self) -> tuple[bool, str] | None:
        """Whether Redis answers (blocking): None, or (fatal, what is wrong). Fatal: it refuses
        the credentials; not: it cannot be reached now (each replica carries on alone)."""
        try:
            self.sync.ping()
        except redis.AuthenticationError as exc:
            return True, f"Redis refuses the credentials of [cluster] redis_url: {describe(exc)}"
        except _ERRORS as exc:
            self.failed(exc, "checking Redis at start")
            return False, f"Redis cannot be reached: {describe(exc)}"
        return None

    async def call(self, what: str, work: Callable[[], Awaitable[T]]) -> T | None:
        """`work()` on Redis, or None when it is down (logged, counted)."""
        if not self.up:
            return None
        try:
            result = await work()
        except _ERRORS as exc:
            self.failed(exc, what)
            return None
        self.answered()
        return result

    def call_now(self, what: str, work: Callable[[], T]) -> T | None:
        """`call`, blocking."""
        if not self.up:
            return None
        try:
            result = work()
        except _ERRORS as exc:
            self.failed(exc, what)
            return None
        self.answered()
        return result

    # --- news of changes ----------------------------------------------------------------------

    def generation(self, page: str = "") -> Hashable:
        self._listen()
        if not page:
            return self.local.generation(), self._news
        return self.local.generation(page), self._news, self._page_news[page_bucket(page)]

    def enrichment(self, page: str) -> Hashable:
        self._listen()
        return self.local.enrichment(page), self._news, self._enriched[page_bucket(page)]

    async def enriched(self, page: str) -> None:
        await self._announce(self.local.enriched(page), json.dumps({"enriched": page}))

    def on_forget(self, forget: Callable[[list[Hashable]], Awaitable[None]]) -> None:
        """Called with the records another replica forgot, before the generation moves on."""
        self._forget = forget

    async def changed(self, page: str = "") -> None:
        if page:
            await self._announce(self.local.changed(page), json.dumps({"page": page}))
        else:
            await self.broadcast([])

    async def broadcast(self, keys: list[Hashable]) -> None:
        """Tell every worker of every replica that index records changed, naming `keys` to
        forget; at least this machine's workers hear it (the local coordinator)."""
        await self._announce(self.local.changed(), _message(keys))

    async def _announce(self, here: Awaitable[None], message: str) -> None:
        """This machine's workers told (`here`, the local coordinator's news), then every
        replica's through the channel."""
        self._listen()
        await here
        await self.call("announcing a change", lambda: self.client.publish(CHANNEL, message))

    def changed_now(self) -> None:
        self.local.changed_now()
        self.call_now("announcing a change", lambda: self.sync.publish(CHANNEL, _message([])))

    def _listen(self) -> None:
        if self._listener is None:
            with contextlib.suppress(RuntimeError):  # no running loop: the command line
                self._listener = asyncio.get_running_loop().create_task(self._listen_forever())

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with self._listening.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._news += 1  # news may have been missed while not listening
                    self.answered()
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None and message["type"] == "message":
                            await self._heard(message["data"])
            except asyncio.CancelledError:
                raise
            except _ERRORS as exc:
                self.failed(exc, "listening for changes")
                await asyncio.sleep(RETRY_SECONDS / 2)

    async def _heard(self, data: bytes) -> None:
        news = _project_news(data)
        if news is not None:
            kind, page = news
            counts = self._enriched if kind == "enriched" else self._page_news
            counts[page_bucket(page)] += 1
            return
        try:
            keys = _keys(data)
        except BadRecord:  # not one of ours: a change all the same
            keys = []
        if keys and self._forget is not None:
            try:
                await self._forget(keys)
            except Exception as exc:  # the records expire all the same
                log.warning("records another replica forgot not forgotten here: %s", exc)
        self._news += 1

    # --- locks --------------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, key: str, progress: Callable[[], int] | None = None
    ) -> AsyncIterator[None]:
        async with self.local.lock(key):
            name, token = LOCKS + key, secrets.token_hex(16)
            held = await self._acquire(name, token)
            renewing = None
            if held:
                renewing = asyncio.create_task(self._renew(name, token, progress))
            try:
                yield
            finally:
                if renewing is not None:
                    renewing.cancel()
                    release = self.client.eval
                    await self.call("releasing a lock", lambda: release(_RELEASE, 1, name, token))
                    if progress is not None:
                        gone = self.client.delete
                        await self.call("releasing a lock", lambda: gone(name + _PROGRESS))

    async def _acquire(self, name: str, token: str) -> bool:
        """True once held; False when Redis cannot be asked (the machine's lock only) before
        the lock was seen held elsewhere; raises HeldElsewhere `wait` seconds past the holder's
        last progress."""
        deadline = time.monotonic() + self.wait
        lease = int(self.lease * 1000)
        seen_held = False
        said: bytes | None = None  # the holder's progress as last read

        async def take() -> bool:
            return bool(await self.client.set(name, token, nx=True, px=lease))

        while True:
            got = await self.call("taking a lock", take)  # None: Redis could not be asked
            if got:
                return True
            if got is None and not seen_held:
                return False
            seen_held = True
            now = await self.call(
                "reading a lock's progress", lambda: self.client.get(name + _PROGRESS)
            )
            if now is not None and now != said:
                said, deadline = now, time.monotonic() + self.wait
            if time.monotonic() >= deadline:
                raise HeldElsewhere(
                    f"another replica has held {name} for {self.wait:.0f}s with no progress"
                )
            await asyncio.sleep(_POLL)

    async def _renew(self, name: str, token: str, progress: Callable[[], int] | None) -> None:
        lease = int(self.lease * 1000)
        while True:
            await asyncio.sleep(self.lease / 3)
            kept = await self.call(
                "renewing a lock", lambda: self.client.eval(_RENEW, 1, name, token, lease)
            )
            if kept == 0:
                log.warning("lock %s lost (its lease ran out): another replica may take it", name)
                return
            if progress is not None:
                await self.call(
                    "telling a lock's progress",
                    lambda: self.client.set(name + _PROGRESS, progress(), px=lease),
                )

    @contextmanager
    def lock_now(self, key: str) -> Iterator[None]:
        with self.local.lock_now(key):
            name, token = LOCKS + key, secrets.token_hex(16)
            lease = int(self.lease * 1000)
            deadline = time.monotonic() + self.wait
            while True:
                got = self.call_now(
                    "taking a lock", lambda: self.sync.set(name, token, nx=True, px=lease)
                )
                if got or (got is None and not self.up):
                    break
                if time.monotonic() >= deadline:
                    raise HeldElsewhere(f"another replica has held {name} for {self.wait:.0f}s")
                time.sleep(_POLL)
            try:
                yield
            finally:
                if got:
                    self.call_now(
                        "releasing a lock", lambda: self.sync.eval(_RELEASE, 1, name, token)
                    )

    # --- shared values ------------------------------------------------------------------------

    def value(self, name: str, size: int = VALUE_BYTES) -> "RedisValue":
        found = self._values.get(name)
        if found is None:
            local = self.local.value(name, size)
            found = self._values[name] = RedisValue(self, VALUES + name, local)
        return found

    def clean(self) -> int:
        return self.local.clean()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        self.local.close()
        self.sync.close()


class RedisValue:
    """A value in Redis, updated in a WATCH/MULTI transaction; the machine's own while Redis is
    down."""

    def __init__(self, coordinator: RedisCoordinator, name: str, local: Any) -> None:
        self.coordinator, self.name = coordinator, name
        self.fallback = local if local is not None else ProcessValue()

    def update(self, change: Callable[[bytes | None], tuple[bytes, T]]) -> T:
        def transaction() -> tuple[T]:
            with self.coordinator.sync.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(self.name)
                        current = pipe.get(self.name)
                        new, result = change(current or None)
                        pipe.multi()
                        pipe.set(self.name, new)
                        pipe.execute()
                        return (result,)
                    except redis.WatchError:
                        continue

        done = self.coordinator.call_now("updating a shared value", transaction)
        if done is None:
            return self.fallback.update(change)
        return done[0]

    def read(self) -> bytes | None:
        sync = self.coordinator.sync
        done = self.coordinator.call_now("reading a shared value", lambda: (sync.get(self.name),))
        if done is None:
            return self.fallback.read()
        return done[0]

    def close(self) -> None:
        self.fallback.close()


def _message(keys: list[Hashable]) -> str:
    """A change's message: the keys of the records to forget, as JSON (never pickled: whatever
    reaches the channel is decoded without running code)."""
    return encode_key(tuple(keys))


def _project_news(data: bytes | str) -> tuple[str, str] | None:
    """The kind and project of a project's news (`{"page": <name>}`, `{"enriched": <name>}`),
    if the message is one."""
    if not data.startswith(b"{" if isinstance(data, bytes) else "{"):
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None
    for kind in ("page", "enriched"):
        page = document.get(kind) if isinstance(document, dict) else None
        if isinstance(page, str):
            return kind, page
    return None


def _keys(data: bytes | str) -> list[Hashable]:
    keys = decode_key(data.decode(errors="replace") if isinstance(data, bytes) else data)
    if not isinstance(keys, tuple):
        raise BadRecord("a message of another shape")
    return list(keys)
