"""Where the proxy keeps things and how its workers coordinate: which implementation of each
storage seam runs (proxy.storage.blobs, proxy.storage.coordinator) is decided here, and nowhere
else. The command line opens the stores without the rest of the proxy (a `serve`'s supervisor
process stays small); the services open them for the index.
"""

from dataclasses import dataclass
from pathlib import Path

from proxy.config import Config
from proxy.storage.blobs import BlobStore
from proxy.storage.coordinator import Coordinator
from proxy.storage.downloads import Downloads
from proxy.storage.local_blobs import LocalBlobStore
from proxy.storage.local_coordinator import LocalCoordinator
from proxy.storage.locations import FileLocations
from proxy.storage.pages import PageStore


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
    pages: PageStore
    locations: FileLocations
    blobs: BlobStore
    downloads: Downloads

    @classmethod
    def open(cls, config: Config, *, count_hits: bool = True) -> "Stores":
        """`count_hits`: this process's file lookups count in the hit ratio (the server's)."""
        return cls.local(config.cache.directory, config.cache.max_size, count_hits=count_hits)

    @classmethod
    def local(cls, directory: Path, max_size: int, *, count_hits: bool = True) -> "Stores":
        """Everything in the cache `directory` of one machine."""
        coordinator = LocalCoordinator(directory)
        pages = PageStore(directory, coordinator)
        blobs = LocalBlobStore(directory, max_size, count_hits=count_hits)
        downloads = Downloads(blobs, coordinator)
        return cls(coordinator, pages, FileLocations(pages), blobs, downloads)

    def clean(self) -> Leftovers:
        """Remove what downloads killed midway left (blocking: at start); what downloads still
        running (a prefetch beside) use stays."""
        parts, size = self.blobs.clean()
        return Leftovers(parts, size, self.coordinator.clean())

    def close(self) -> None:
        self.pages.close()
        self.blobs.close()
        self.coordinator.close()
