"""The composition root: configuration → the upstream transport, the sources, the stores and the
index built over them, in one place. `serve` (each worker, at start), `prefetch` and the `cache`
commands start from here; nothing else decides which implementation of anything runs.

    index = Yanked(Annotated(Guarded(PrivateFirst(
        Merged([NameRules(WithDetails(CachedSource(GitLab source))), ...]),
        [NameRules(CachedSource(public source)), ...],
    ))))

Each `[[views]]` entry gets the same composition over the same per-source objects, asked in the
view's order (gitlab_pypi_proxy.index.views). A new kind of source is a module, a line in
KINDS and, in gitlab_pypi_proxy.config, its key in `SOURCE_KINDS`, how `_source` reads its
target and `SourceConfig.is_gitlab`; a new behaviour of the index, a module and a line in
`compose`.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gitlab_pypi_proxy import __version__, metrics, runtime_dir
from gitlab_pypi_proxy.aio import TaskSet
from gitlab_pypi_proxy.auth import Authenticator
from gitlab_pypi_proxy.config import Config, SourceConfig
from gitlab_pypi_proxy.index.annotations import Annotated, WithDetails
from gitlab_pypi_proxy.index.cached import CachedSource, Freshness, forget
from gitlab_pypi_proxy.index.core_metadata import CoreMetadata
from gitlab_pypi_proxy.index.files import FileFinder
from gitlab_pypi_proxy.index.guarded import Guarded, NameRules
from gitlab_pypi_proxy.index.index_protocol import Index, SourceAnswers
from gitlab_pypi_proxy.index.merged import Merged
from gitlab_pypi_proxy.index.name_poll import NamePoll, configured_interval
from gitlab_pypi_proxy.index.private_first import PrivateFirst
from gitlab_pypi_proxy.index.provenance_passthrough import Provenances
from gitlab_pypi_proxy.index.refresh import Said, refresh
from gitlab_pypi_proxy.index.shadows import ShadowCheck, ShadowedNames
from gitlab_pypi_proxy.index.views import View, in_view_order
from gitlab_pypi_proxy.index.warming import Warmer
from gitlab_pypi_proxy.index.yanked import OperatorYanks, Yanked
from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.policy.audit_trail import AuditTrail
from gitlab_pypi_proxy.policy.rules import AuditSettings, PolicySettings, SourceRules
from gitlab_pypi_proxy.sources.base import Context, Details, PackageListing, Parts, UploadTarget
from gitlab_pypi_proxy.sources.budget import Budget
from gitlab_pypi_proxy.sources.gitlab_group import GitLabGroup
from gitlab_pypi_proxy.sources.gitlab_project import GitLabProject
from gitlab_pypi_proxy.sources.simple_index import SimpleIndexSource
from gitlab_pypi_proxy.sources.upstream import Upstream, make_upstream
from gitlab_pypi_proxy.sources.upstream_health import UpstreamHealth
from gitlab_pypi_proxy.storage.details import DetailsStore
from gitlab_pypi_proxy.storage.metadata_store import MetadataStore
from gitlab_pypi_proxy.storage.provenance_store import ProvenanceStore
from gitlab_pypi_proxy.storage.purge import Purge
from gitlab_pypi_proxy.storage.stores import Stores
from gitlab_pypi_proxy.storage.uploads import RecentUploads

# Every kind of source, by its configuration key (config.py reads its table: see above).
KINDS: dict[str, Callable[[SourceConfig, Context], Parts]] = {
    "gitlab_project": GitLabProject.build,
    "gitlab_group": GitLabGroup.build,
    "url": SimpleIndexSource.build,
}


@dataclass
class Composed:
    """The index over the sources, and what it is made of."""

    index: Index  # what clients are served
    plain: PrivateFirst  # the sources' pages and names, without what the proxy adds (prefetch)
    files: FileFinder
    metadata: CoreMetadata
    tasks: TaskSet  # remembering where files are, in the background
    shadows: ShadowCheck
    yanks: OperatorYanks  # what operators yanked through the API
    provenances: Provenances | None = None  # PEP 740, from the public sources
    warmer: Warmer | None = None  # the pages of what a wheel being installed requires
    views: dict[str, View] = field(default_factory=dict)  # [[views]], by name
    cached: dict[str, CachedSource] = field(default_factory=dict)  # each source's answers

    async def close(self) -> None:
        """Finish the background work (so the stores can be closed after it)."""
        if self.warmer is not None:
            await self.warmer.close()
        await self.tasks.settled()
        await self.shadows.tasks.close()
        await self.metadata.close()


def compose(
    sources: Sequence[Parts],
    stores: Stores,
    metadata: MetadataStore,
    freshness: Freshness,
    *,
    allow_public: Mapping[str, frozenset[str]] | None = None,
    yanked: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
    policy: PolicySettings | None = None,
    advisories: Advisories | None = None,
    provenance: ProvenanceStore | None = None,
    warm_dependencies: bool = False,
    views: Mapping[str, Sequence[str]] | None = None,
) -> Composed:
    """The index over `sources` (in priority order), built from the wrappers of
    gitlab_pypi_proxy.index, and one over each of `views` (name → its sources, in its order):
    the same wrappers over the same sources, asked in the view's order."""
    tasks = TaskSet(logging.getLogger("proxy.index"), "remembering where files are")
    policy = policy or PolicySettings()
    advisories = advisories or Advisories(None)

    def ruled(answers: SourceAnswers) -> SourceAnswers:
        named = policy.sources.get(answers.name)
        return answers if named is None or named == SourceRules() else NameRules(answers, policy)

    # One of each per source, whichever index asks it: their records and fetches are shared.
    cached = {
        p.source.name: CachedSource(p.source, stores.pages, stores.locations, freshness, tasks)
        for p in sources
    }
    answers: dict[str, SourceAnswers] = {}
    for p in sources:
        inner: SourceAnswers = cached[p.source.name]
        if p.owns_names and p.details is not None:
            inner = WithDetails(inner, p.details)
        answers[p.source.name] = ruled(inner)

    shadows = ShadowCheck(freshness.ttl, ShadowedNames(stores.coordinator))

    def private_first(ordered: Sequence[Parts]) -> PrivateFirst:
        return PrivateFirst(
            Merged([answers[p.source.name] for p in ordered if p.owns_names]),
            [answers[p.source.name] for p in ordered if not p.owns_names],
            stores.locations,
            shadows,
            allow_public=allow_public,
            generation=stores.coordinator.generation,
        )

    details: dict[str, Details] = {
        p.source.name: p.details for p in sources if p.details is not None
    }
    files = FileFinder(
        [p.source for p in sources],
        stores.locations,
        stores.deliveries,
        details,
        ranged=[p.source.name for p in sources if p.serves_ranges],
    )
    sidecars = {p.source.name: p.sidecars for p in sources if p.sidecars is not None}
    core_metadata = CoreMetadata(
        metadata,
        stores.blobs,
        files,
        {p.source.name: p.source for p in sources},
        sidecars,
        enriched=stores.coordinator.enriched,
        downloads=stores.downloads,
        offline=freshness.offline,
    )
    url_sources = frozenset(p.source.name for p in sources if not p.owns_names)
    yanks = OperatorYanks(stores.coordinator)

    def served(plain: PrivateFirst) -> Index:
        guarded = Guarded(
            plain,
            policy,
            advisories,
            stores.locations,
            url_sources,
            generation=stores.coordinator.generation,
        )
        return Yanked(Annotated(guarded, core_metadata), yanked or {}, yanks)

    plain = private_first(sources)
    index = served(plain)
    in_views = {
        name: View(
            name,
            tuple(names),
            served(private_first(in_view_order(sources, names, lambda p: p.source.name))),
        )
        for name, names in (views or {}).items()
    }
    provenances = (
        None if provenance is None else Provenances(provenance, stores.locations, sidecars)
    )
    warmer = None
    if warm_dependencies and not freshness.offline:

        async def kept(name: str) -> bool:
            for source in cached.values():
                if await source.kept(name):
                    return True  # the rest need not be asked
            return False

        warmer = Warmer(index.project_page, kept)
        core_metadata.warm = warmer.warm
    return Composed(
        index,
        plain,
        files,
        core_metadata,
        tasks,
        shadows,
        yanks,
        provenances,
        warmer,
        in_views,
        cached,
    )


def audit_trail(settings: AuditSettings) -> AuditTrail | None:
    if settings.path is None:
        return None
    return AuditTrail(settings.path, max_size=settings.max_size, keep=settings.keep)


@dataclass
class Services:
    config: Config
    health: UpstreamHealth
    upstream: Upstream
    stores: Stores
    sources: list[Parts]  # in priority order
    composed: Composed
    auth: Authenticator
    uploads: RecentUploads
    budget: Budget
    details_store: DetailsStore
    advisories: Advisories
    audit: AuditTrail | None
    name_poll: NamePoll  # names published straight to GitLab (started by `warm`)
    purge: Purge  # a cached file and its sidecars dropped everywhere
    _settings: str | None = field(default=None, init=False)  # the config's digest, once asked

    @classmethod
    def start(cls, config: Config, *, patient: bool = False) -> "Services":
        """`patient`: GitLab requests wait for the budget instead of failing (prefetch)."""
        health = UpstreamHealth(runtime_dir.health_directory())
        upstream = make_upstream(
            config.gitlab.timeout,
            health,
            sources=len(config.sources),
            max_page_size=config.cache.max_page_size,
        )
        directory = config.cache.directory
        stores = Stores.open(config)
        budget = Budget(
            config.gitlab.max_requests_per_minute,
            stores.coordinator.value("gitlab-budget"),
            patient=patient,
        )
        details_store = DetailsStore(directory)
        changed: Callable[[str], Awaitable[None]] = stores.coordinator.changed
        context = Context(upstream, config.gitlab, budget, details_store, changed)
        sources = [KINDS[s.kind](s, context) for s in config.sources]
        owned = [s for s in config.sources if s.is_gitlab]
        cache = config.cache
        advisories = Advisories(config.guard.policy.vulnerabilities)
        composed = compose(
            sources,
            stores,
            MetadataStore(directory),
            Freshness(cache.index_ttl, cache.negative_ttl, cache.offline),
            allow_public={s.name: s.allow_public for s in owned},
            yanked={s.name: s.yanked for s in owned},
            policy=config.guard.policy,
            advisories=advisories,
            provenance=ProvenanceStore(directory),
            warm_dependencies=cache.warm_dependencies,
            views={v.name: v.sources for v in config.views},
        )
        auth = Authenticator(
            config.auth,
            config.users,
            frozenset(p.source.name for p in sources if p.uploads is not None),
            {p.source.name: p.probe for p in sources if p.probe is not None},
            frozenset(p.source.name for p in sources if not p.owns_names),
        )
        uploads = RecentUploads(directory)

        async def published(source: str, names: frozenset[str]) -> None:
            await forget(stores.pages, [source], *names)

        name_poll = NamePoll(
            {p.source.name: p.watched for p in sources if p.watched is not None},
            stores.coordinator.value,
            stores.pages,
            published,
            interval=configured_interval(),
        )
        purge = Purge(
            stores.blobs,
            composed.metadata.store,
            composed.provenances.store if composed.provenances is not None else None,
            stores.pages,
            [p.source.name for p in sources],
            shared_blobs=config.storage.backend == "s3",
        )
        metrics.forget_dead_workers()
        return cls(
            config,
            health,
            upstream,
            stores,
            sources,
            composed,
            auth,
            uploads,
            budget,
            details_store,
            advisories,
            audit_trail(config.guard.audit),
            name_poll,
            purge,
        )

    @property
    def source_names(self) -> list[str]:
        return [p.source.name for p in self.sources]

    def upload_target(self, name: str) -> UploadTarget | None:
        return next((p.uploads for p in self.sources if p.source.name == name), None)

    def package_listing(self, name: str) -> PackageListing | None:
        return next((p.packages for p in self.sources if p.source.name == name), None)

    def details(self) -> list[Details]:
        return [p.details for p in self.sources if p.details is not None]

    async def uploaded(self, name: str) -> None:
        """Read-your-writes after an upload of `name`: every worker asks for its page anew."""
        owners = [p.source.name for p in self.sources if p.owns_names]
        await forget(self.stores.pages, owners, name)

    async def refresh(self, name: str) -> list[Said]:
        """Ask every source for normalized `name` now (gitlab_pypi_proxy.index.refresh): what
        each said, in priority order; every worker and replica lists it from then on."""
        owners = [p.source.name for p in self.sources if p.owns_names]
        cached = [self.composed.cached[source] for source in self.source_names]
        return await refresh(name, cached, owners, self.stores.pages, self.config.guard.policy)

    def warm(self) -> None:
        """Start what this worker does while it serves: the shared poll of the GitLab sources
        for names published to them (which also keeps each project's root index), from its
        first index page; nothing offline, which never contacts an upstream."""
        if self.config.cache.offline:
            return
        self.name_poll.start()

    async def start_guard(self) -> None:
        """Read the OSV export (raises OsvError when it cannot be read) and open the audit
        trail (raises OSError saying why it cannot be written)."""
        await self.advisories.load()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.start)

    def rendering(self) -> str:
        """What this worker's pages are rendered from besides the index records: the proxy's
        version, its settings and the advisories in force. The workers of one machine share
        rendered pages only while it is the same (gitlab_pypi_proxy.storage.rendered_pages):
        a worker a SIGHUP or a restart started with other settings or another export renders
        its own."""
        if self._settings is None:
            self._settings = self.config.digest()
        return f"{__version__}:{self._settings}:{self.advisories.index.identity}"

    async def reload_advisories(self) -> None:
        """SIGHUP: the OSV export again; pages built before show the old advisories no more."""
        if await self.advisories.reload():
            await self.stores.coordinator.changed()

    async def stop(self) -> None:
        await self.name_poll.close()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
        self.auth.close()
        await self.composed.close()
        for details in self.details():
            await details.close()
        await self.upstream.aclose()
        if self.composed.provenances is not None:
            self.composed.provenances.store.close()
        self.stores.close()
        self.uploads.close()
        self.details_store.close()
        self.budget.close()
