"""The shared poll of GitLab sources for names published straight to GitLab: once a GitLab source
has a name, the public index stops answering it by the next poll, every worker polls through one
claim per interval, a failed poll changes nothing, a group is read newest first and bounded."""

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy.config import GitLabConfig, SourceConfig
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.errors import NotFound
from gitlab_pypi_proxy.index.cached import PageKey, forget
from gitlab_pypi_proxy.index.name_poll import NamePoll
from gitlab_pypi_proxy.model import ProjectPage
from gitlab_pypi_proxy.sources import gitlab_group
from gitlab_pypi_proxy.sources.base import Parts, Seen
from gitlab_pypi_proxy.sources.gitlab_group import GitLabGroup
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.upstream import Upstream
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.pages import Entry, PageStore
from gitlab_pypi_proxy.storage.redis_coordinator import RedisCoordinator
from gitlab_pypi_proxy.storage.stores import Stores
from tests.backing_services import RedisServer, redis_server  # noqa: F401 (a fixture)
from tests.servers import serve
from tests.unit.fakes import FakeSource
from tests.unit.indexes import composed

TOKEN = "glpat-poll"
GROUP = "acme"


@pytest.fixture(scope="module")
def double() -> GitLabDouble:
    double = GitLabDouble()
    double.add_group(5, GROUP)
    double.add_token(TOKEN, read=set())
    return double


@pytest.fixture(scope="module")
def gitlab(double: GitLabDouble) -> Iterator[str]:
    with serve(double.app) as server:
        yield server.url


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def _project(double: GitLabDouble, gitlab: str, http: httpx2.AsyncClient, pid: int):
    double.add_project(pid, f"{GROUP}/p{pid}")
    double.tokens[TOKEN].read.add(pid)
    config = SourceConfig(f"p{pid}", "gitlab_project", str(pid))
    return GitLabProject(config, GitLabConfig(url=gitlab, token=TOKEN, timeout=5), Upstream(http))


def _publish(double: GitLabDouble, pid: int, name: str, version: str = "1.0") -> None:
    """An upload straight to GitLab (a CI pipeline's), not through the proxy."""
    filename, data = make_wheel(name, version)
    double.add_package_file(pid, name, version, filename, data)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _poll(stores: Stores, sources: dict, clock: Clock, interval: float = 60) -> NamePoll:
    async def published(source: str, names: frozenset[str]) -> None:
        await forget(stores.pages, [source], *names)

    values = stores.coordinator.value
    return NamePoll(sources, values, stores.pages, published, interval=interval, clock=clock)


class Counting:
    """A GitLab source whose polls are counted (what GitLab would see)."""

    def __init__(self) -> None:
        self.polls = 0
        self.seen: list[Seen] = []

    async def poll(self, seen: Seen | None) -> tuple[Seen, frozenset[str]]:
        self.polls += 1
        return Seen(frozenset({f"n{self.polls}"})), frozenset()

    def saw(self, seen: Seen) -> None:
        self.seen.append(seen)


async def test_every_worker_shares_one_poll_per_interval(tmp_path: Path) -> None:
    clock = Clock()
    # two workers on one cache directory: each its own coordinator and records, as processes
    workers = [Stores.local(tmp_path, 2**30) for _ in range(2)]
    sources = [{"a": Counting(), "b": Counting()} for _ in workers]
    polls = [_poll(stores, s, clock) for stores, s in zip(workers, sources, strict=True)]
    for second in (0, 1, 30, 59.9, 60, 61, 119, 120):
        clock.now = 1_000_000.0 + second
        for poll in polls:
            for name in ("a", "b"):
                due = await poll.tick(name)
                assert 0 < due - clock.now <= 60
    for name in ("a", "b"):
        assert sum(s[name].polls for s in sources) == 3  # at 0, 60 and 120: once per interval
    # the worker that did not poll took what the poll saw
    assert all(s["a"].seen for s in sources)


async def test_replicas_share_one_poll_per_interval_through_redis(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    clock = Clock()
    replicas = [
        RedisCoordinator(redis_server.url, LocalCoordinator(tmp_path / name)) for name in "ab"
    ]
    sources = [{"a": Counting()} for _ in replicas]

    async def published(source: str, names: frozenset[str]) -> None:
        pass

    records = [PageStore(tmp_path / n, c) for n, c in zip("ab", replicas, strict=True)]
    polls = [
        NamePoll(s, c.value, r, published, clock=clock)
        for s, c, r in zip(sources, replicas, records, strict=True)
    ]
    try:
        for second in (0, 30, 60, 90):
            clock.now = 1_000_000.0 + second
            for poll in polls:
                await poll.tick("a")
        assert sum(s["a"].polls for s in sources) == 2
    finally:
        for store, coordinator in zip(records, replicas, strict=True):
            store.close()
            coordinator.close()


async def test_a_name_published_straight_to_gitlab_stops_coming_from_the_public_index(
    tmp_path: Path, double: GitLabDouble, gitlab: str, http: httpx2.AsyncClient
) -> None:
    source = _project(double, gitlab, http, 21)
    _publish(double, 21, "inhouse")
    public = FakeSource("public")
    public.add("colorama", "colorama-0.4.6-py3-none-any.whl", "c" * 64)
    stores = Stores.local(tmp_path, 2**30)
    built = composed(
        tmp_path, [Parts(source, owns_names=True)], [public], negative_ttl=3600, stores=stores
    )
    clock = Clock()
    poll = _poll(stores, {"p21": source}, clock)
    await poll.tick("p21")  # the first poll, at start
    assert (await built.index.project_page("colorama")).sources == ("public",)
    _publish(double, 21, "colorama", "0.4.7")
    # GitLab's "not here" is kept for an hour: without the poll the public index answers
    assert (await built.index.project_page("colorama")).sources == ("public",)
    asked = double.count("GET", "/api/v4/projects/21/packages/pypi/simple")
    generation = stores.coordinator.generation()
    clock.now += 60
    await poll.tick("p21")
    assert double.count("GET", "/api/v4/projects/21/packages/pypi/simple") == asked + 1
    assert stores.coordinator.generation() != generation  # every worker's rendered pages too
    page = await built.index.project_page("colorama")
    assert page.sources == ("p21",)
    assert [f.filename for f in page.files] == ["colorama-0.4.7-py3-none-any.whl"]
    assert source.root_index.lists("colorama")  # and the hint knows it


async def test_a_not_here_kept_before_the_first_poll_is_forgotten_by_it(
    tmp_path: Path, double: GitLabDouble, gitlab: str, http: httpx2.AsyncClient
) -> None:
    source = _project(double, gitlab, http, 22)
    _publish(double, 22, "kept")
    stores = Stores.local(tmp_path, 2**30)
    built = composed(tmp_path, [Parts(source, owns_names=True)], negative_ttl=3600, stores=stores)
    assert (await built.index.project_page("kept")).sources == ("p22",)
    with pytest.raises(NotFound):  # kept by a worker before this start (a warmed dependency)
        await built.index.project_page("early")
    _publish(double, 22, "early")
    await _poll(stores, {"p22": source}, Clock()).tick("p22")  # no earlier poll to compare with
    assert (await built.index.project_page("early")).sources == ("p22",)
    double.down_status = 503
    try:  # the page kept of a name GitLab had was left alone: it is served while GitLab is down
        assert (await built.index.project_page("kept")).sources == ("p22",)
    finally:
        double.down_status = None


async def test_a_poll_forgets_only_what_says_not_there(
    tmp_path: Path, double: GitLabDouble, gitlab: str, http: httpx2.AsyncClient
) -> None:
    """A page kept, and a name of which nothing is kept, are left alone: forgetting the latter
    would race with its page being kept meanwhile (a client's first install as the worker's
    first poll runs), and lose that page for an outage right after."""
    source = _project(double, gitlab, http, 25)
    for name in ("listed", "unknown", "said-absent"):
        _publish(double, 25, name)
    forgotten: list[frozenset[str]] = []

    async def published(name: str, names: frozenset[str]) -> None:
        forgotten.append(names)

    stores = Stores.local(tmp_path, 2**30)
    await stores.pages.put(PageKey("p", "listed").raw, Entry(ProjectPage("listed"), 1000.0))
    await stores.pages.put(PageKey("p", "said-absent").raw, Entry(None, 1000.0))
    poll = NamePoll({"p": source}, stores.coordinator.value, stores.pages, published)
    await poll.tick("p")
    assert forgotten == [{"said-absent"}]


@pytest.mark.parametrize("failure", ["GitLab down", "the token lost the project"])
async def test_a_failed_poll_changes_nothing_and_the_next_compares_with_the_last_good_one(
    tmp_path: Path,
    double: GitLabDouble,
    gitlab: str,
    http: httpx2.AsyncClient,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pid = 23 if failure == "GitLab down" else 24
    source = _project(double, gitlab, http, pid)
    _publish(double, pid, "known")
    forgotten: list[frozenset[str]] = []

    async def published(name: str, names: frozenset[str]) -> None:
        forgotten.append(names)

    stores = Stores.local(tmp_path, 2**30)
    for name in ("known", "meanwhile"):  # a worker kept "not here" of each before
        await stores.pages.put(PageKey("p", name).raw, Entry(None, 1000.0))
    clock = Clock()
    values = stores.coordinator.value
    poll = NamePoll({"p": source}, values, stores.pages, published, clock=clock)
    await poll.tick("p")
    assert forgotten == [{"known"}]  # the first poll: every name it saw said not there
    try:
        if failure == "GitLab down":
            double.down_status = 503
        else:
            double.tokens[TOKEN].read.discard(pid)
        for _ in range(2):
            clock.now += 60
            with caplog.at_level(logging.WARNING, "proxy.name_poll"):
                await poll.tick("p")
        _publish(double, pid, "meanwhile")
    finally:
        double.down_status = None
        double.tokens[TOKEN].read.add(pid)
    assert forgotten == [{"known"}]
    assert source.root_index.lists("known")  # what was known stays known
    warnings = [r.getMessage() for r in caplog.records if r.name == "proxy.name_poll"]
    assert len(warnings) == 1 and "cannot poll for names published to GitLab" in warnings[0]
    assert TOKEN not in warnings[0]
    clock.now += 60
    await poll.tick("p")
    assert forgotten == [{"known"}, {"meanwhile"}]


async def test_a_group_is_polled_newest_first_one_page_unless_a_whole_page_is_new(
    tmp_path: Path,
    double: GitLabDouble,
    gitlab: str,
    http: httpx2.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    double.add_project(31, f"{GROUP}/a", public=True)
    double.add_project(32, f"{GROUP}/b", public=True)
    config = SourceConfig("group", "gitlab_group", GROUP)
    group = GitLabGroup(config, GitLabConfig(url=gitlab, timeout=5), Upstream(http))
    listing = f"/api/v4/groups/{GROUP}/packages"
    double.add_package_file(31, "Old_One", "1.0", "old_one-1.0.tar.gz", b"o")
    seen, names = await group.poll(None)
    assert names == {"old-one"}  # the first poll: the names of its one page
    asked = double.count("GET", listing)

    for n in range(150):  # more than a page published since: the next page too
        double.add_package_file(31 + n % 2, f"Bulk_{n}", "1.0", f"bulk_{n}-1.0.tar.gz", b"b")
    seen, names = await group.poll(seen)
    assert names == {f"bulk-{n}" for n in range(150)}
    assert double.count("GET", listing) == asked + 2

    seen, names = await group.poll(seen)  # nothing new: one request
    assert names == set() and double.count("GET", listing) == asked + 3

    monkeypatch.setattr(gitlab_group, "POLL_PAGES", 2)
    for n in range(250):
        double.add_package_file(32, f"more-{n}", "1.0", f"more_{n}-1.0.tar.gz", b"m")
    with caplog.at_level(logging.WARNING, "proxy.sources.gitlab"):
        _, names = await group.poll(seen)
    assert len(names) == 200 and double.count("GET", listing) == asked + 5  # bounded
    assert "more than 200 packages published since the last poll" in caplog.text
