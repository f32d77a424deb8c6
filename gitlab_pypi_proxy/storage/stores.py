"""Where the proxy keeps things and how its workers coordinate: which implementation of each
storage seam runs (gitlab_pypi_proxy.storage.blobs, gitlab_pypi_proxy.storage.coordinator,
gitlab_pypi_proxy.storage.records) is decided here, and nowhere else. The command line opens
the stores without the rest of the proxy (a `serve`'s supervisor process stays small); the
services open them for the index."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gitlab_pypi_proxy.config import Config
from gitlab_pypi_proxy.storage.blobs import BlobStore
from gitlab_pypi_proxy.storage.coordinator import Coordinator
from gitlab_pypi_proxy.storage.deliveries import Deliveries
from gitlab_pypi_proxy.storage.downloads import Downloads
from gitlab_pypi_proxy.storage.local_blobs import LocalBlobStore
from gitlab_pypi_proxy.storage.local_coordinator import LocalCoordinator
from gitlab_pypi_proxy.storage.locations import FileLocations
from gitlab_pypi_proxy.storage.pages import PageStore
from gitlab_pypi_proxy.storage.records import RecordStore
from gitlab_pypi_proxy.storage.rendered_pages import RenderedPages
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for


@dataclass(frozen=True)
class Leftovers:
    """What stopped processes left, removed at start: spools, their bytes, lock files."""

    parts: int
    bytes: int
    locks: int


@dataclass(frozen=True)
class SharedPart:
    """A service replicas share (the bucket, Redis): checked at start, its state shown."""

    kind: str  # "s3" or "redis"
    problem: Callable[[], tuple[bool, str] | None]  # blocking: None, or (fatal, what is wrong)
    reachable: Callable[[], tuple[bool, str]]  # as this process saw it last: (yes, reason)


@dataclass
class Stores:
    """Where the proxy keeps things, and how its workers coordinate. Which implementations run
    is decided here, and nowhere else."""

    coordinator: Coordinator
    pages: RecordStore
    locations: FileLocations
    blobs: BlobStore
    downloads: Downloads
    shared: tuple[SharedPart, ...] = ()

    @property
    def deliveries(self) -> Deliveries:
        """Which sources delivered which files (gitlab_pypi_proxy.storage.deliveries)."""
        return self.downloads.deliveries

    @classmethod
    def open(cls, config: Config, *, count_hits: bool = True) -> "Stores":
        """`count_hits`: this process's file lookups count in the hit ratio (the server's).

        `[storage] backend = "s3"` puts the files in a bucket, `[cluster] redis_url` shares
        locks, records and news through Redis; their modules (and obstore, redis-py) are
        imported only then: the one-machine default loads neither."""
        directory = config.cache.directory
        if config.storage.backend == "local" and config.cluster.redis_url is None:
            return cls.local(directory, config.cache.max_size, count_hits=count_hits)
        local = LocalCoordinator(directory)
        coordinator: Coordinator = local
        pages: RecordStore = PageStore(directory, local)
        shared: list[SharedPart] = []
        blobs: BlobStore
        if config.storage.backend == "s3":
            from gitlab_pypi_proxy.storage.s3_blobs import S3BlobStore

            blobs = bucket = S3BlobStore(config.storage, directory, count_hits=count_hits)
            shared.append(SharedPart("s3", bucket.problem, bucket.reachable))
        else:
            blobs = LocalBlobStore(directory, config.cache.max_size, count_hits=count_hits)
        if config.cluster.redis_url is not None:
            from gitlab_pypi_proxy.storage.redis_coordinator import RedisCoordinator
            from gitlab_pypi_proxy.storage.shared_records import SharedRecords

            coordinator = redis = RedisCoordinator(config.cluster.redis_url, local)
            pages = SharedRecords(PageStore(directory, local), redis)
            shared.append(SharedPart("redis", redis.problem, redis.reachable))
        downloads = Downloads(blobs, coordinator, Deliveries(pages, coordinator))
        locations = FileLocations(directory, pages.writes)
        return cls(coordinator, pages, locations, blobs, downloads, tuple(shared))

    @classmethod
    def local(cls, directory: Path, max_size: int, *, count_hits: bool = True) -> "Stores":
        """Everything in the cache `directory` of one machine."""
        coordinator = LocalCoordinator(directory)
        pages = PageStore(directory, coordinator)
        blobs = LocalBlobStore(directory, max_size, count_hits=count_hits)
        downloads = Downloads(blobs, coordinator, Deliveries(pages, coordinator))
        return cls(coordinator, pages, FileLocations(directory, pages.writes), blobs, downloads)

    def rendered_pages(self) -> RenderedPages | None:
        """Pages rendered for every worker of this machine (its caller closes them), when news
        reach them all through its disk; None with Redis, whose news each process counts."""
        if not isinstance(self.coordinator, LocalCoordinator):
            return None
        try:
            return RenderedPages(self.coordinator)
        except WRITE_ERRORS as exc:  # each worker renders its own pages, as with Redis
            writes_for(self.coordinator.directory).failed(exc, "sharing rendered pages")
            return None

    def clean(self) -> Leftovers:
        """Remove what downloads killed midway left (blocking: at start); what downloads still
        running (a prefetch beside) use stays."""
        parts, size = self.blobs.clean()
        return Leftovers(parts, size, self.coordinator.clean())

    def close(self) -> None:
        self.pages.close()
        self.locations.close()
        self.blobs.close()
        self.coordinator.close()
