"""What the file cache holds per project (`GET /-/projects`): each project's cached versions,
files, bytes and last use, for an operator deciding what to purge or yank.

Read from the blob store's own listing (sizes, and last use: the local store's access times, or
when a bucket's object was stored, since a bucket keeps no access times) and, for each digest,
the name it was listed under (gitlab_pypi_proxy.storage.locations). Those records are each
machine's own: a file only another replica has seen listed is counted as `unnamed`. Blocking: it
reads every blob's entry; the route runs it in a thread.
"""

from dataclasses import dataclass, field

from gitlab_pypi_proxy.names import file_project_name, file_version
from gitlab_pypi_proxy.storage.blobs import BlobStore
from gitlab_pypi_proxy.storage.locations import FileLocations


@dataclass
class CachedProject:
    name: str  # normalized; "" for the files whose name this machine never saw listed
    versions: set[str] = field(default_factory=set)
    files: int = 0
    bytes: int = 0
    last_use: float = 0.0

    def add(self, version: str | None, size: int, used: float) -> None:
        if version:
            self.versions.add(version)
        self.files += 1
        self.bytes += size
        self.last_use = max(self.last_use, used)


def cached_projects(
    blobs: BlobStore, locations: FileLocations
) -> tuple[list[CachedProject], CachedProject]:
    """The projects with cached files, by name, and the files of no known name."""
    projects: dict[str, CachedProject] = {}
    unnamed = CachedProject("")
    for entry in blobs.entries():
        listed = locations.of_now(entry.sha256)
        filename = listed[0].filename if listed else ""
        name = file_project_name(filename) if filename else None
        if name is None:
            unnamed.add(None, entry.size, entry.used)
            continue
        project = projects.setdefault(name, CachedProject(name))
        project.add(file_version(filename), entry.size, entry.used)
    return sorted(projects.values(), key=lambda p: p.name), unnamed
