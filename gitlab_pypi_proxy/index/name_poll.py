"""The dependency-confusion window, bounded: a name published straight to GitLab (not through the
proxy) stops coming from the public index within INTERVAL seconds plus GitLab's answer.

A GitLab source's "not here" is kept for `negative_ttl`, and meanwhile the public index answers
the name. So every GitLab source is polled once per INTERVAL, by one worker of one replica for
all (a value claimed through the coordinator), whatever the number of names; the names it holds
that the previous poll lacked have that source's records forgotten everywhere, as an upload does.
What a poll saw is an index record every worker reads. A failed poll changes nothing: what is
known is served as before, nothing turns public. A worker polls once it has answered its first
page; offline, `prefetch` and the `cache` commands never poll. Why each choice:
docs/architecture.md, "The name poll"."""

import asyncio
import logging
import math
import os
import struct
import time
from collections.abc import Awaitable, Callable, Mapping

from gitlab_pypi_proxy.aio import TaskSet
from gitlab_pypi_proxy.errors import Refused, SourceUnavailable
from gitlab_pypi_proxy.index.cached import PageKey, PollKey
from gitlab_pypi_proxy.names import InvalidName, validate
from gitlab_pypi_proxy.sources.base import Seen, Watched
from gitlab_pypi_proxy.storage.coordinator import SharedValue
from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.records import RecordStore

log = logging.getLogger("proxy.name_poll")

INTERVAL = 60.0  # seconds between two polls of a source: the bound, and one request a minute
INTERVAL_ENV = "GITLAB_PYPI_PROXY_TEST_POLL_INTERVAL"  # tests only: a shorter interval
_STATE = struct.Struct("<d")  # when the source was last claimed for a poll (Unix time)
_SHOWN = 5  # names a log line shows

Forget = Callable[[str, frozenset[str]], Awaitable[None]]  # (source, names)


def configured_interval() -> float:
    """INTERVAL, or the shorter one a test set in INTERVAL_ENV."""
    try:
        interval = float(os.environ.get(INTERVAL_ENV, INTERVAL))
    except ValueError:
        return INTERVAL
    return interval if interval > 0 else INTERVAL


class NamePoll:
    def __init__(
        self,
        sources: Mapping[str, Watched],
        shared: Callable[[str], SharedValue],
        records: RecordStore,
        forget: Forget,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources, self.records, self.forget = dict(sources), records, forget
        self.interval, self._clock = interval, clock
        self._shared = shared
        self._values: dict[str, SharedValue] = {}  # opened by the first claim (in a thread)
        self._failing: dict[str, str] = {}  # source → why its last poll failed
        self._learnt: dict[str, float] = {}  # source → the poll record it last read
        self._tasks = TaskSet(log, "polling GitLab for new names")
        self._started = False

    def start(self) -> None:
        """Poll once an index page is asked (each serving worker, at its start), until closed."""
        self._started = True

    def asked(self) -> None:
        """An index page was asked: poll each source when due from now on, if started."""
        if self._started and len(self._tasks) < len(self.sources):
            for name in self.sources:
                self._tasks.spawn(self._watch(name), key=name)

    async def close(self) -> None:
        await self._tasks.close()

    async def _watch(self, name: str) -> None:
        least = min(1.0, self.interval / 10)  # a clock set back never makes it spin
        while True:
            try:
                due = await self.tick(name)
            except Exception as exc:  # the loop outlives any one failure
                log.warning("source %s: polling for new names failed: %s", name, exc)
                due = self._clock() + self.interval
            await asyncio.sleep(max(least, due - self._clock()))

    async def tick(self, name: str) -> float:
        """Poll `name` if it is due (this worker claimed it), else take what the last poll saw;
        when it is due next (a `clock` time)."""
        claimed, due = await asyncio.to_thread(self._claim, name)
        if claimed:
            await self._poll(name)
        else:
            await self._learn(name)
        return due

    def _claim(self, name: str) -> tuple[bool, float]:
        """(claimed, when due next), atomically among every worker sharing the value
        (blocking)."""
        value = self._values.get(name)
        if value is None:
            value = self._values[name] = self._shared(f"name-poll/{name}")

        def change(data: bytes | None) -> tuple[bytes, tuple[bool, float]]:
            now = self._clock()
            last = _STATE.unpack(data)[0] if data and len(data) == _STATE.size else -math.inf
            if now - last >= self.interval or now < last - self.interval:  # due, or clock set back
                return _STATE.pack(now), (True, now + self.interval)
            return _STATE.pack(last), (False, last + self.interval)

        return value.update(change)

    async def _poll(self, name: str) -> None:
        key = PollKey(name).raw
        before = _seen(await self.records.get(key))
        try:
            seen, new = await self.sources[name].poll(before)
        except (SourceUnavailable, Refused) as exc:
            if name not in self._failing:
                log.warning(
                    "source %s: cannot poll for names published to GitLab: %s (what is known is "
                    "served as before; polled again in %.0f s)",
                    name,
                    exc,
                    self.interval,
                )
            self._failing[name] = str(exc)
            return
        if self._failing.pop(name, None) is not None:
            log.info("source %s: polled for names published to GitLab again", name)
        wrong = await self._said_not_here(name, new) if new else frozenset()
        if wrong:  # forgotten before the poll is recorded: a worker that dies between asks again
            await self.forget(name, wrong)
            shown = sorted(n for n in wrong if _valid(n))[:_SHOWN]
            log.log(
                logging.DEBUG if before is None else logging.INFO,  # the first: every name
                'source %s: %d name(s) published to GitLab, their "not here" forgotten: %s',
                name,
                len(wrong),
                ", ".join(shown) + (", ..." if len(wrong) > len(shown) else ""),
            )
        if seen != before:
            await self.records.put(key, Entry((seen.names, seen.newest), time.time()))
        self.sources[name].saw(seen)
        log.debug(
            "source %s: polled for new names: %d names, %d new", name, len(seen.names), len(new)
        )

    async def _said_not_here(self, source: str, names: frozenset[str]) -> frozenset[str]:
        """Of `names`, those a kept record of `source` says it does not have: what a poll
        corrects. A page kept needs nothing forgotten, and no record at all neither (forgetting
        it would race with the page being kept meanwhile, and lose it for an outage after)."""
        unknown, not_here = await asyncio.to_thread(self._kept_here, source, names)
        keys = [PageKey(source, n).raw for n in unknown]  # kept elsewhere (Redis) perhaps
        found = await asyncio.gather(*(self.records.get(key) for key in keys))
        return not_here | {n for n, e in zip(unknown, found, strict=True) if _not_here(e)}

    def _kept_here(self, source: str, names: frozenset[str]) -> tuple[list[str], frozenset[str]]:
        """Of `names`, those with no record of `source` kept here, and those whose record says
        it does not have them (blocking)."""
        unknown, not_here = [], set()
        for name in names:
            entry = self.records.get_now(PageKey(source, name).raw)
            if not isinstance(entry, Entry):
                unknown.append(name)
            elif entry.value is None:
                not_here.add(name)
        return unknown, frozenset(not_here)

    async def _learn(self, name: str) -> None:
        """What another worker's poll saw last, if this worker has not taken it yet."""
        entry = await self.records.get(PollKey(name).raw)
        seen = _seen(entry)
        if entry is not None and seen is not None and self._learnt.get(name) != entry.fetched_at:
            self._learnt[name] = entry.fetched_at
            self.sources[name].saw(seen)


def _not_here(entry: Entry | None) -> bool:
    return entry is not None and entry.value is None


def _seen(entry: Entry | None) -> Seen | None:
    """What a poll record says (None: no poll recorded, or a record of another shape)."""
    value = entry.value if entry is not None else None
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], frozenset)
        and isinstance(value[1], int)
    ):
        return Seen(value[0], value[1])
    return None


def _valid(name: str) -> bool:
    try:
        return validate(name) == name
    except InvalidName:
        return False
