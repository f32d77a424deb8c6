"""The composition root: configuration → the upstream transport, the sources, the stores and the
index built over them, in one place. `serve` (each worker, at start), `prefetch` and the `cache`
commands start from here; nothing else decides which implementation of anything runs."""

from dataclasses import dataclass

from proxy import metrics, runtime_dir
from proxy.auth import Authenticator
from proxy.config import Config
from proxy.index.compose import Index
from proxy.index.core_metadata import CoreMetadata
from proxy.sources.base import Source
from proxy.sources.budget import Budget
from proxy.sources.gitlab import GitLabSource
from proxy.sources.simple_index import SimpleIndexSource
from proxy.sources.upstream import Upstream, make_client
from proxy.sources.upstream_health import UpstreamHealth
from proxy.storage.details import DetailsStore
from proxy.storage.files import FileStore
from proxy.storage.metadata import MetadataStore
from proxy.storage.pages import PageCache
from proxy.storage.uploads import RecentUploads


@dataclass
class Services:
    config: Config
    health: UpstreamHealth
    upstream: Upstream
    pages: PageCache
    files: FileStore
    gitlab: list[GitLabSource]  # in priority order
    index: Index
    auth: Authenticator
    metadata: CoreMetadata
    uploads: RecentUploads
    budget: Budget
    details: DetailsStore

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
        details = DetailsStore(directory)
        gitlab = [
            GitLabSource(
                s,
                config.gitlab,
                upstream,
                budget=budget,
                details=details,
                changed=pages.invalidate,
            )
            for s in config.sources
            if s.is_gitlab
        ]
        sources: list[Source] = list(gitlab)
        public: list[Source] = [
            SimpleIndexSource(s, upstream) for s in config.sources if not s.is_gitlab
        ]
        files = FileStore(config.cache.directory, config.cache.max_size)
        auth = Authenticator(
            config.auth,
            config.users,
            frozenset(s.name for s in config.sources if s.kind == "gitlab_project"),
            {s.name: s.readable_with for s in gitlab},
            frozenset(s.name for s in public),
        )
        index = Index(sources, public, pages)
        metadata = CoreMetadata(
            MetadataStore(config.cache.directory), files, pages, index, upstream
        )
        uploads = RecentUploads(config.cache.directory)
        metrics.forget_dead_workers()
        return cls(
            config,
            health,
            upstream,
            pages,
            files,
            gitlab,
            index,
            auth,
            metadata,
            uploads,
            budget,
            details,
        )

    async def stop(self) -> None:
        self.auth.close()
        await self.metadata.close()
        await self.index.close()
        for source in self.gitlab:
            await source.details.close()
        await self.upstream.aclose()
        self.pages.close()
        self.files.close()
        self.uploads.close()
        self.details.close()
        self.budget.close()
