"""The composition root: configuration → the upstream transport, the sources, the stores and the
index built over them, in one place. `serve` (each worker, at start), `prefetch` and the `cache`
commands start from here; nothing else decides which implementation of anything runs."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy import metrics, runtime_dir
from proxy.auth import Authenticator
from proxy.config import Config, SourceConfig
from proxy.index.compose import Index
from proxy.index.core_metadata import CoreMetadata
from proxy.sources.base import Context, Details, PackageListing, Parts, UploadTarget
from proxy.sources.budget import Budget
from proxy.sources.gitlab_group import GitLabGroup
from proxy.sources.gitlab_project import GitLabProject
from proxy.sources.simple_index import SimpleIndexSource
from proxy.sources.upstream import Upstream, make_client
from proxy.sources.upstream_health import UpstreamHealth
from proxy.storage.blobs import BlobStore
from proxy.storage.coordinator import Coordinator
from proxy.storage.details import DetailsStore
from proxy.storage.downloads import Downloads
from proxy.storage.local_blobs import LocalBlobStore
from proxy.storage.local_coordinator import LocalCoordinator
from proxy.storage.metadata import MetadataStore
from proxy.storage.pages import PageCache
from proxy.storage.uploads import RecentUploads


@dataclass(frozen=True)
class Leftovers:
    """What stopped processes left, removed at start: spools, their bytes, lock files."""

    parts: int
    bytes: int
    locks: int


@dataclass
class Stores:
    """Where the proxy keeps things, and how its workers coordinate. Which implementations run
    is decided here, and nowhere else."""

    coordinator: Coordinator
    pages: PageCache
    blobs: BlobStore
    downloads: Downloads

    @classmethod
    def open(cls, config: Config, *, count_hits: bool = True) -> "Stores":
        """`count_hits`: this process's file lookups count in the hit ratio (the server's)."""
        cache = config.cache
        return cls.local(
            cache.directory,
            cache.max_size,
            index_ttl=cache.index_ttl,
            negative_ttl=cache.negative_ttl,
            offline=cache.offline,
            count_hits=count_hits,
        )

    @classmethod
    def local(
        cls,
        directory: Path,
        max_size: int,
        *,
        index_ttl: float = 300,
        negative_ttl: float | None = None,
        offline: bool = False,
        count_hits: bool = True,
    ) -> "Stores":
        """Everything in the cache `directory` of one machine."""
        coordinator = LocalCoordinator(directory)
        pages = PageCache(directory, index_ttl, offline=offline, negative_ttl=negative_ttl)
        blobs = LocalBlobStore(directory, max_size, count_hits=count_hits)
        return cls(coordinator, pages, blobs, Downloads(blobs, coordinator))

    def clean(self) -> Leftovers:
        """Remove what downloads killed midway left (blocking: at start); what downloads still
        running (a prefetch beside) use stays."""
        parts, size = self.blobs.clean()
        return Leftovers(parts, size, self.coordinator.clean())

    def close(self) -> None:
        self.pages.close()
        self.blobs.close()
        self.coordinator.close()


# Every kind of source, by its configuration key: a new kind is a module and a line here.
KINDS: dict[str, Callable[[SourceConfig, Context], Parts]] = {
    "gitlab_project": GitLabProject.build,
    "gitlab_group": GitLabGroup.build,
    "url": SimpleIndexSource.build,
}


@dataclass
class Services:
    config: Config
    health: UpstreamHealth
    upstream: Upstream
    stores: Stores
    sources: list[Parts]  # in priority order
    index: Index
    auth: Authenticator
    metadata: CoreMetadata
    uploads: RecentUploads
    budget: Budget
    details_store: DetailsStore

    @classmethod
    def start(cls, config: Config, *, patient: bool = False) -> "Services":
        """`patient`: GitLab requests wait for the budget instead of failing (prefetch)."""
        health = UpstreamHealth(runtime_dir.health_directory())
        upstream = Upstream(make_client(config.gitlab.timeout, health), health)
        directory = config.cache.directory
        stores = Stores.open(config)
        pages = stores.pages
        budget = Budget(
            config.gitlab.max_requests_per_minute,
            stores.coordinator.value("gitlab-budget"),
            patient=patient,
        )
        details_store = DetailsStore(directory)
        context = Context(upstream, config.gitlab, budget, details_store, pages.invalidate)
        sources = [KINDS[s.kind](s, context) for s in config.sources]
        private = [p.source for p in sources if p.owns_names]
        public = [p.source for p in sources if not p.owns_names]
        auth = Authenticator(
            config.auth,
            config.users,
            frozenset(p.source.name for p in sources if p.uploads is not None),
            {p.source.name: p.probe for p in sources if p.probe is not None},
            frozenset(s.name for s in public),
        )
        owned = [s for s in config.sources if s.is_gitlab]
        index = Index(
            private,
            public,
            pages,
            allow_public={s.name: s.allow_public for s in owned},
            details={p.source.name: p.details for p in sources if p.details is not None},
            yanked={s.name: s.yanked for s in owned},
        )
        metadata = CoreMetadata(
            MetadataStore(config.cache.directory),
            stores.blobs,
            pages,
            index,
            {p.source.name: p.source for p in sources},
            {p.source.name: p.sidecars for p in sources if p.sidecars is not None},
        )
        uploads = RecentUploads(config.cache.directory)
        metrics.forget_dead_workers()
        return cls(
            config,
            health,
            upstream,
            stores,
            sources,
            index,
            auth,
            metadata,
            uploads,
            budget,
            details_store,
        )

    def upload_target(self, name: str) -> UploadTarget | None:
        return next((p.uploads for p in self.sources if p.source.name == name), None)

    def package_listing(self, name: str) -> PackageListing | None:
        return next((p.packages for p in self.sources if p.source.name == name), None)

    def details(self) -> list[Details]:
        return [p.details for p in self.sources if p.details is not None]

    async def stop(self) -> None:
        self.auth.close()
        await self.metadata.close()
        await self.index.close()
        for details in self.details():
            await details.close()
        await self.upstream.aclose()
        self.stores.close()
        self.uploads.close()
        self.details_store.close()
        self.budget.close()
