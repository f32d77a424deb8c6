"""PEP 658/714 core metadata for every wheel the proxy lists, GitLab's included (GitLab has none).

The METADATA comes from, cheapest first: the verified file cache; the upstream's own sidecar
(checked against its digest); ranged reads of the wheel's end. For the wheel a client is about
to download, the first range read runs as a download it can join (`whole_or_tail`): a small
wheel is then whole and kept one round trip earlier. It is kept per source
(gitlab_pypi_proxy.storage.metadata_store), from that source's bytes only, so a listing of
another source's digest learns nothing of a file. It is obtained in the background for the
unyanked wheels of every page served (bounded, single-flight, never a held file) and on demand
for a sidecar; a page advertises it only once stored, since pip and uv fail hard on a sidecar
that 404s. Once stored, its project is `enriched` (gitlab_pypi_proxy.storage.coordinator): a
page rendered before is still served, once, while it is rendered again in the background, so
an install right after the one that taught the proxy its wheels' metadata is not held up by
rendering the big pages again. GitLab range reads are spent from its request budget."""

import asyncio
import contextlib
import heapq
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.aio import SingleFlight, TaskSet, TTLMemo, off_loop
from gitlab_pypi_proxy.errors import FileNotFoundUpstream, HashMismatch, Offline, SourceUnavailable
from gitlab_pypi_proxy.index.files import FileFinder
from gitlab_pypi_proxy.index.wheel_metadata import (
    TAIL,
    NoMetadata,
    NotWhole,
    RangesUnsupported,
    by_ranges,
    from_file,
    whole_or_tail,
)
from gitlab_pypi_proxy.model import DistFile, FileStream, ProjectPage
from gitlab_pypi_proxy.names import file_project_name, file_version, wheel_version_part
from gitlab_pypi_proxy.sources.base import RangeReader, Sidecars, Source
from gitlab_pypi_proxy.storage.blobs import BlobStore
from gitlab_pypi_proxy.storage.deliveries import Opener
from gitlab_pypi_proxy.storage.downloads import Declined, Download, Downloads
from gitlab_pypi_proxy.storage.metadata_store import Key, MetadataStore

log = logging.getLogger("proxy.core_metadata")

_CONCURRENCY = 4
_RETRY_AFTER = 300.0
_MAX_REMEMBERED = 4096  # wheels whose metadata could not be had lately (~300 bytes each)
_BACKGROUND_PER_PAGE = 4  # resolvers mostly read the newest versions; older ones on demand
_EXPECTED = (
    NoMetadata,
    RangesUnsupported,
    SourceUnavailable,
    FileNotFoundUpstream,
    Offline,
    HashMismatch,  # a source's bytes are not what it lists: logged where found
)


def _key(file: DistFile) -> Key:
    return (file.source, file.sha256)


class CoreMetadata:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        files: FileFinder,
        sources: Mapping[str, Source],
        sidecars: Mapping[str, Sidecars] | None = None,
        *,
        enriched: Callable[[str], Awaitable[None]],
        downloads: Downloads | None = None,
        offline: bool = False,
    ) -> None:
        self.store, self.blobs, self.files = store, blobs, files
        self.downloads = downloads  # small wheels are kept whole through it
        # told the METADATA of each wheel a client is about to install
        # (gitlab_pypi_proxy.index.warming)
        self.warm: Callable[[str, bytes], None] | None = None
        self.enriched = enriched  # metadata stored: the project's pages may advertise it
        self.offline = offline
        self.sources = dict(sources)  # by name: every source, for ranged reads of its wheels
        self.sidecars = dict(sidecars or {})  # by name: public indexes with PEP 658 sidecars
        self._limit = asyncio.Semaphore(_CONCURRENCY)
        self._flights: SingleFlight[Key, str | None] = SingleFlight()
        self._failed: TTLMemo[Key, None] = TTLMemo(_MAX_REMEMBERED, _RETRY_AFTER)  # not again yet
        self.tasks = TaskSet(log, "obtaining core metadata")

    async def close(self) -> None:
        """Stop background work, then close the store."""
        await self.tasks.close()
        await self._flights.close()
        self.store.close()

    # --- pages ---------------------------------------------------------------------------------

    async def annotated(self, page: ProjectPage) -> ProjectPage:
        """The page advertising the metadata the proxy serves: the stored one where there is
        one (it wins over an upstream's claim), else the upstream's own; the missing ones are
        sought in the background."""
        wheels, offered, keys = await off_loop(len(page.files), _wheels, page.files)
        if not wheels:
            return page
        known = await self.store.digests(keys, page.name)
        # the newest wheels, not the newest of those still lacking metadata: a page rendered
        # again must not walk back through every old version of a long history. Not yanked
        # ones (`offered`): resolvers pass them by, and the policy lists the files it holds as
        # yanked.
        newest = await off_loop(len(offered), _newest, offered)
        self._in_background(
            page.name,
            [f for f in newest if _key(f) not in known and not f.core_metadata_sha256],
            _the_next_download(newest),
        )
        if not known:
            return page
        return await off_loop(len(page.files), _with_metadata, page, known)

    def _in_background(self, name: str, files: Iterable[DistFile], ahead: DistFile | None) -> None:
        todo = [f for f in files if _key(f) not in self._flights and _key(f) not in self._failed]
        if todo:
            self._spawn(self._batch(name, todo, ahead))

    async def _batch(self, name: str, files: list[DistFile], ahead: DistFile | None) -> None:
        digests = await asyncio.gather(
            *(self.ensure(f, background=True, ahead=f is ahead) for f in files)
        )
        if any(digests):
            await self.enriched(name)  # once for the whole batch

    def after_download(self, download: Download, sha256: str, filename: str) -> None:
        """Once `download` is kept, read its metadata from the cache, for the source it read."""
        if filename.endswith(".whl"):
            self._spawn(self._after(download, sha256, filename))

    async def _after(self, download: Download, sha256: str, filename: str) -> None:
        try:
            await download.wait()
        except Exception:
            return  # not kept: the download's own path logs why
        if download.source is None:
            return  # found cached: no source delivered anything here
        file = DistFile(filename, sha256, source=download.source, url="")  # known by digest
        if not await self.store.digests([_key(file)], None) and await self.ensure(
            file, background=True
        ):
            # its project's pages advertise it; pages listing it under another name do not (the
            # store lists metadata by the project its file name says)
            project = file_project_name(filename)
            if project:
                await self.enriched(project)

    def _spawn(self, work: Awaitable[None]) -> None:
        self.tasks.spawn(work)

    # --- obtaining ----------------------------------------------------------------------------

    async def ensure(
        self, file: DistFile, *, background: bool = False, ahead: bool = False
    ) -> str | None:
        """Obtain and store the metadata of `file`; its digest, or None if it cannot be had.
        `ahead`: a client is about to download the wheel: a small one is read whole for it."""
        return await self._flights.run(_key(file), lambda: self._obtain(file, background, ahead))

    async def _obtain(self, file: DistFile, background: bool, ahead: bool) -> str | None:
        # what a client is about to join never queues behind background reads
        async with contextlib.nullcontext() if ahead else self._limit:
            try:
                data = await self._extract(file, background, ahead)
            except _EXPECTED as exc:
                log.info("no core metadata for %s: %s", file.filename, exc)
            except Exception as exc:  # a background task must not die with a traceback
                log.warning("core metadata of %s failed: %s", file.filename, exc)
            else:
                if ahead and self.warm is not None:
                    self.warm(file.sha256, data)
                project = file_project_name(file.filename) or ""
                return await self.store.put(file.source, file.sha256, data, project)
        self._failed.set(_key(file), None)
        return None

    async def _extract(self, file: DistFile, background: bool, ahead: bool) -> bytes:
        source = self.sources.get(file.source)
        online = source is not None and not self.offline
        sidecars = self.sidecars.get(file.source)
        if online and file.core_metadata_sha256 is not None and sidecars is not None:
            return await sidecars.core_metadata(file)  # exactly what the upstream advertised
        wheel = file.filename.endswith(".whl")
        small = file.size is None or file.size <= TAIL
        downloads = self.downloads if self.blobs.keeping else None
        if ahead and source is not None and online and wheel and small and downloads is not None:
            return await self._whole_or_by_ranges(source, file, background, downloads)
        cached = await self._from_cache(file)
        if cached is not None:
            return cached
        if source is None or not online or not file.url:  # no URL: known by its digest alone
            raise NoMetadata(f"{file.filename} is not cached")
        if not wheel:
            raise NoMetadata(f"{file.filename} is not a wheel")
        # GitLab's are spent from its request budget, at background priority unless a client
        # waits for the sidecar
        return await by_ranges(source.range_reader(file, background=background), file.filename)

    async def _whole_or_by_ranges(
        self, source: Source, file: DistFile, background: bool, downloads: Downloads
    ) -> bytes:
        """The first range read as a download the client can join: started before anything
        else is awaited (the client asks for the wheel right after the page), at a client's
        priority in GitLab's budget (a client waits for it); the download finds the file cached
        by itself, and then this source delivers it too, with the same reads. A larger wheel's
        further reads keep the priority asked for."""
        first = source.range_reader(file, background=False)
        download = downloads.download(file.sha256, _whole_from(file, first))
        reader = source.range_reader(file, background=background)
        try:
            await download.wait()
            if download.source != file.source:  # cached already, or another source's download
                again = _whole_from(file, source.range_reader(file, background=False))
                await downloads.deliveries.verify(
                    file.sha256, file.source, file.filename, again, download.size
                )
        except NotWhole as larger:
            return await by_ranges(reader, file.filename, larger.tail)
        except Declined as declined:
            raise declined.__cause__ or declined from None  # the tail read's own failure
        kept = await self._from_cache(file)
        if kept is None:
            raise NoMetadata(f"{file.filename} was downloaded but not kept")
        return kept

    async def _from_cache(self, file: DistFile) -> bytes | None:
        """The METADATA of the cached file, if the file's source delivered it."""
        if not await self.files.deliveries.delivered_by(file.sha256, file.source):
            return None
        cached = await self.blobs.open(file.sha256, count=False)
        if cached is None:
            return None
        try:
            return await asyncio.to_thread(from_file, cached.reader(), file.filename)
        finally:
            await asyncio.to_thread(cached.close)

    # --- serving ------------------------------------------------------------------------------

    async def sidecar(
        self, sha256: str, filename: str, allowed: frozenset[str] | None
    ) -> bytes | None:
        """The `<file>.metadata` body, obtained now if need be; None when there is none. That of
        the first source the reader may read that offers the file, as its page advertised."""
        candidates = await self.files.locate(sha256, filename, allowed)
        for file in candidates:
            body = await self.store.get(file.source, sha256)
            if body is not None:
                if self.warm is not None:
                    self.warm(sha256, body)  # the client installs it: its requirements come next
                return body
        if not filename.endswith(".whl"):
            return None
        for file in candidates:
            if await self.ensure(file, ahead=True):  # the wheel is likely asked next
                return await self.store.get(file.source, sha256)
        return None


def _wheels(files: Iterable[DistFile]) -> tuple[list[DistFile], list[DistFile], list[Key]]:
    """The wheels among `files`, those of them not yanked, and their metadata store keys."""
    wheels = [f for f in files if f.filename.endswith(".whl")]
    return wheels, [f for f in wheels if f.yanked is False], [_key(f) for f in wheels]


def _whole_from(file: DistFile, read: RangeReader) -> Opener:
    """The look-ahead's download of `file` (gitlab_pypi_proxy.index.wheel_metadata), as a
    stream of its source."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[FileStream]:
        async with whole_or_tail(read, file.filename) as stream:
            yield replace(stream, source=file.source)

    return opened


def _with_metadata(page: ProjectPage, known: Mapping[Key, str]) -> ProjectPage:
    files = tuple(
        replace(f, core_metadata_sha256=known[_key(f)]) if _key(f) in known else f
        for f in page.files
    )
    return replace(page, files=files)


_NO_VERSION = Version("0")


def _version_key(filename: str) -> Version:
    """Not memoized: a memo of every file name of the pages served held tens of MiB per worker,
    and a page's keys are worked out once per rendering, in a thread for a big page."""
    try:
        return Version(file_version(filename) or "0")
    except InvalidVersion:
        return _NO_VERSION


def _the_next_download(newest: list[DistFile]) -> DistFile | None:
    """The wheel a client is about to download after this page: the newest version's, when it
    has just one (pure Python); with several (one per platform) which one is not known."""
    if not newest:
        return None
    if len(newest) > 1 and _version_key(newest[1].filename) == _version_key(newest[0].filename):
        return None
    return newest[0]


def _newest(files: list[DistFile]) -> list[DistFile]:
    """The wheels of the newest versions, at most _BACKGROUND_PER_PAGE of them. Each version
    spelling is parsed once (a version's wheels, one per platform, spell it alike)."""
    keys: dict[str, Version] = {}  # by spelling, from names that parse

    def key(file: DistFile) -> Version:
        spelled = wheel_version_part(file.filename)
        if spelled is not None and spelled in keys:
            return keys[spelled]
        version = file_version(file.filename)
        if version is None:
            return _NO_VERSION
        parsed = keys[spelled or file.filename] = Version(version)
        return parsed

    return heapq.nlargest(_BACKGROUND_PER_PAGE, files, key=key)
