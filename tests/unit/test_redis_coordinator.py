"""The Redis coordinator against a real Redis: one lock holder across replicas, a dead holder's
lease taken over, a follower that stops waiting past its bound, news heard by every replica,
shared values updated atomically, and Redis down costing nothing but sharing."""

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitlab_pypi_proxy.index.yanked import OperatorYanks
from gitlab_pypi_proxy.storage.coordinator import HeldElsewhere, page_bucket
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.redis_coordinator import LOCKS, RedisCoordinator
from tests.backing_services import RedisServer, redis_server  # noqa: F401 (a fixture)
from tests.waiting import async_wait_until


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer) -> Iterator[list[RedisCoordinator]]:  # noqa: F811
    """Two replicas' coordinators: each its own directory, one Redis."""
    made = [
        RedisCoordinator(redis_server.url, LocalCoordinator(tmp_path / name), lease=1, wait=2)
        for name in ("a", "b")
    ]
    yield made
    for coordinator in made:
        coordinator.close()


async def test_one_holder_at_a_time_across_replicas(replicas: list[RedisCoordinator]) -> None:
    inside, most = 0, 0

    async def hold(coordinator: RedisCoordinator) -> None:
        nonlocal inside, most
        async with coordinator.lock("digest"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(*(hold(replicas[n % 2]) for n in range(6)))
    assert most == 1


async def test_a_dead_holder_s_lock_is_taken_over_after_its_lease(
    replicas: list[RedisCoordinator],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = redis_server.client()
    # a replica that took the lock and died: nobody renews it
    assert client.set(LOCKS + "digest", "dead-replica", nx=True, px=1000)
    async with replicas[0].lock("digest"):
        assert client.get(LOCKS + "digest") != b"dead-replica"
    assert client.get(LOCKS + "digest") is None  # released by its token


async def test_a_follower_stops_waiting_past_its_bound(replicas: list[RedisCoordinator]) -> None:
    a, b = replicas
    async with a.lock("digest"):  # a live holder renews its lease past b's wait
        with pytest.raises(HeldElsewhere, match="another replica has held"):
            async with b.lock("digest"):
                pass


async def test_a_follower_waits_as_long_as_the_holder_makes_progress(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """A download longer than the follower's bound (3 s here, 60 s by default) is waited for
    while its bytes grow, instead of being fetched a second time; one that stops growing is
    not waited for past the bound. Progress is told at each renewal (every third of the lease):
    a lease longer than the fixture's keeps a busy machine's stall from letting it run out."""
    a, b = (
        RedisCoordinator(redis_server.url, LocalCoordinator(tmp_path / name), lease=3, wait=3)
        for name in ("a", "b")
    )
    written = 0
    growing, downloaded = asyncio.Event(), asyncio.Event()

    async def download(seconds: float, grows: bool) -> None:
        nonlocal written
        async with a.lock("digest", progress=lambda: written):
            growing.set()
            deadline = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < deadline:
                written += 1 if grows else 0
                await asyncio.sleep(0.05)  # the download's pace: what is being tested
            downloaded.set()

    holder = asyncio.create_task(download(4.5, grows=True))  # longer than b's wait
    await growing.wait()
    async with b.lock("digest"):
        # b got the lock only once a's download was over (a may still be letting go of its
        # machine's lock, in a thread, after Redis's)
        assert downloaded.is_set()
    await holder

    growing.clear()
    stuck = asyncio.create_task(download(8.0, grows=False))
    await growing.wait()
    with pytest.raises(HeldElsewhere, match="with no progress"):
        async with b.lock("digest"):
            pass
    assert not stuck.done()
    stuck.cancel()
    a.close()
    b.close()


async def test_a_follower_that_saw_the_lock_held_waits_through_a_redis_failure(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis failing while b waits for a's lock (its own call, or any other of its process):
    going on with the machine's lock only would download again what a is downloading. b waits
    longer than Redis is left alone after a failure."""
    a, b = (
        RedisCoordinator(redis_server.url, LocalCoordinator(tmp_path / name), lease=1, wait=30)
        for name in ("a", "b")
    )
    asked, entered = [], asyncio.Event()
    taking = b.call

    async def call(what: str, work: Any) -> Any:
        if what == "taking a lock":
            asked.append(what)
            if len(asked) == 2:  # the first said "held": Redis fails on the next
                b.failed(ConnectionError("connection reset"), what)
        return await taking(what, work)

    monkeypatch.setattr(b, "call", call)

    async def follow() -> None:
        async with b.lock("digest"):
            entered.set()

    try:
        async with a.lock("digest"):
            follower = asyncio.ensure_future(follow())
            await async_wait_until(lambda: entered.is_set() or len(asked) > 3, "b to ask again")
            assert not entered.is_set()  # not while a holds it
        await follower  # once Redis is asked again, and a has let go
        assert entered.is_set()
    finally:
        for coordinator in (a, b):
            coordinator.close()


async def test_news_reach_the_other_replica(replicas: list[RedisCoordinator]) -> None:
    a, b = replicas
    forgotten: list[object] = []

    async def forget(keys: list[object]) -> None:
        forgotten.extend(keys)

    b.on_forget(forget)
    before = b.generation()
    await async_wait_until(lambda: b.reachable()[0] and b._news, "b to listen", 20)
    before = b.generation()
    await a.broadcast([("page", "platform", "acme-utils")])
    await async_wait_until(lambda: b.generation() != before, "b to hear the news", 20)
    assert forgotten == [("page", "platform", "acme-utils")]


async def test_a_project_s_news_reach_the_other_replica_for_its_pages_only(
    replicas: list[RedisCoordinator],
) -> None:
    a, b = replicas
    other = next(f"y{n}" for n in range(100) if page_bucket(f"y{n}") != page_bucket("x"))
    await async_wait_until(lambda: b.reachable()[0] and b._news, "b to listen", 20)
    before = {what: b.generation(what) for what in ("x", other, "")}
    await a.changed("x")
    await async_wait_until(lambda: b.generation("x") != before["x"], "b to hear of x", 20)
    assert b.generation(other) == before[other] and b.generation() == before[""]


async def test_a_project_s_enrichment_reaches_the_other_replica_and_changes_no_generation(
    replicas: list[RedisCoordinator],
) -> None:
    a, b = replicas
    other = next(f"y{n}" for n in range(100) if page_bucket(f"y{n}") != page_bucket("x"))
    await async_wait_until(lambda: b.reachable()[0] and b._news, "b to listen", 20)
    generations = {what: b.generation(what) for what in ("x", other)}
    before = {what: b.enrichment(what) for what in ("x", other)}
    await a.enriched("x")
    await async_wait_until(lambda: b.enrichment("x") != before["x"], "b to hear of x", 20)
    assert b.enrichment(other) == before[other]
    assert {what: b.generation(what) for what in ("x", other)} == generations


def test_shared_values_update_atomically(replicas: list[RedisCoordinator]) -> None:
    values = [c.value("gitlab-budget") for c in replicas]

    def add_one(current: bytes | None) -> tuple[bytes, None]:
        return str(int(current or b"0") + 1).encode(), None

    def work(n: int) -> None:
        for _ in range(50):
            values[n % 2].update(add_one)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert values[0].update(lambda current: (current or b"", current)) == b"200"


async def test_redis_down_costs_sharing_only(
    replicas: list[RedisCoordinator],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, _ = replicas
    redis_server.stop()
    async with a.lock("digest"):  # the machine's lock only
        pass
    before = a.generation()
    await a.changed()  # never fails; this machine's workers hear it
    assert a.generation() != before
    assert a.value("budget").update(lambda current: (b"1", current)) is None  # kept locally
    reachable, reason = a.reachable()
    assert not reachable and reason


async def test_an_operators_yank_reaches_the_other_replica_and_outlives_both(
    tmp_path: Path,
    replicas: list[RedisCoordinator],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = replicas
    on_a, on_b = OperatorYanks(a), OperatorYanks(b)
    await async_wait_until(lambda: b.reachable()[0] and b._news, "b to listen", 20)
    before = b.generation()
    assert await on_b.current() == {}
    await on_a.yank("acme-core", "1.1.0", "broken", "ops")
    await async_wait_until(lambda: b.generation() != before, "b to hear of the yank", 20)
    yanked = (await on_b.current())["acme-core"]
    assert yanked["1.1"]["reason"] == "broken"  # versions compared in their canonical form
    # a replica started later, with a directory of its own, reads it from Redis
    later = RedisCoordinator(redis_server.url, LocalCoordinator(tmp_path / "c"))
    try:
        assert (await OperatorYanks(later).current())["acme-core"]["1.1"]["by"] == "ops"
    finally:
        later.close()
    before = a.generation()
    assert await on_b.unyank("acme-core", "1.1") is True
    await async_wait_until(lambda: a.generation() != before, "a to hear of the unyank", 20)
    assert await on_a.current() == {}


RAN: list[str] = []


def _run(what: str) -> None:
    RAN.append(what)


class _Detonator:
    """Unpickling it runs code: what a pickle anyone with Redis access wrote could do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_run, ("ran",))


async def test_a_record_another_replica_kept_is_seen_without_reading_it(
    tmp_path: Path,
    replicas: list[RedisCoordinator],
) -> None:
    from gitlab_pypi_proxy.storage.pages import Entry, PageStore
    from gitlab_pypi_proxy.storage.shared_records import SharedRecords

    a, b = replicas
    here = SharedRecords(PageStore(tmp_path / "a-records", a.local), a)
    there = SharedRecords(PageStore(tmp_path / "b-records", b.local), b)
    try:
        key = ("page", "platform", "acme-utils")
        assert not await there.has(key)
        await here.put(key, Entry(None, 1000.0))
        assert await there.has(key)  # in Redis, not on b's disk
    finally:
        here.close()
        there.close()


async def test_a_record_is_encoded_once_for_this_machine_and_redis(
    tmp_path: Path,
    replicas: list[RedisCoordinator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page of thousands of files is milliseconds of CPU to encode: the bytes Redis keeps are
    the ones the local store keeps, and a newer record read from Redis is kept as it came."""
    from gitlab_pypi_proxy.storage import pages, shared_records
    from gitlab_pypi_proxy.storage.pages import Entry, PageStore
    from gitlab_pypi_proxy.storage.shared_records import SharedRecords

    encoded: list[object] = []
    encode = pages.encode

    def counted(value: object) -> bytes:
        encoded.append(value)
        return encode(value)

    monkeypatch.setattr(shared_records, "encode", counted)
    monkeypatch.setattr(pages, "encode", counted)
    a, b = replicas
    here = SharedRecords(PageStore(tmp_path / "a-records", a.local), a)
    there = SharedRecords(PageStore(tmp_path / "b-records", b.local), b)
    try:
        key, entry = ("page", "platform", "acme-utils"), Entry(("x", 1), 1000.0)
        await here.put(key, entry)
        assert len(encoded) == 1
        assert await there.get(key) == entry  # from Redis, now kept on b's disk too
        assert await there.local.get(key) == entry and len(encoded) == 1
    finally:
        here.close()
        there.close()


async def test_what_another_writer_puts_in_redis_is_never_unpickled(
    tmp_path: Path,
    replicas: list[RedisCoordinator],
) -> None:
    """Records and news in Redis are JSON: a pickle under a record's name is dropped (the
    record is fetched again), one on the news channel is a change naming nothing."""
    import pickle

    from gitlab_pypi_proxy.storage.pages import PageStore
    from gitlab_pypi_proxy.storage.shared_records import SharedRecords, _name

    a, b = replicas
    RAN.clear()
    records = SharedRecords(PageStore(tmp_path / "records", a.local), a)
    try:
        key = ("page", "platform", "acme-utils")
        a.sync.set(_name(key), pickle.dumps(_Detonator()))
        assert await records.get(key) is None
        await async_wait_until(lambda: b.reachable()[0] and b._news, "b to listen", 20)
        before = b.generation()
        a.sync.publish("gitlab-pypi-proxy:changes", pickle.dumps([_Detonator()]))
        await async_wait_until(lambda: b.generation() != before, "b to hear the news", 20)
    finally:
        records.close()
    assert RAN == []
