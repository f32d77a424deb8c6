"""The composition root: configuration → the upstream transport, the sources, the stores and the
index built over them, in one place. `serve` (each worker, at start), `prefetch` and the `cache`
commands start from here; nothing else decides which implementation of anything runs."""

from collections.abc import Callable
from dataclasses import dataclass

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
from proxy.storage.details import DetailsStore
from proxy.storage.files import FileStore
from proxy.storage.metadata import MetadataStore
from proxy.storage.pages import PageCache
from proxy.storage.uploads import RecentUploads

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
    pages: PageCache
    files: FileStore
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
        pages = PageCache(
            directory,
            config.cache.index_ttl,
            offline=config.cache.offline,
            negative_ttl=config.cache.negative_ttl,
        )
        budget = Budget(
            config.gitlab.max_requests_per_minute, directory / "gitlab-budget", patient=patient
        )
        details_store = DetailsStore(directory)
        context = Context(upstream, config.gitlab, budget, details_store, pages.invalidate)
        sources = [KINDS[s.kind](s, context) for s in config.sources]
        private = [p.source for p in sources if p.owns_names]
        public = [p.source for p in sources if not p.owns_names]
        files = FileStore(config.cache.directory, config.cache.max_size)
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
            files,
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
            pages,
            files,
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
        self.pages.close()
        self.files.close()
        self.uploads.close()
        self.details_store.close()
        self.budget.close()
