"""The workers of one machine, coordinated through the cache directory
(gitlab_pypi_proxy.storage.coordinator).

Locks: an flock on `files/locks/<key>`, made for the lock and unlinked, still held, on release;
a waiter that gets a lock on a file since unlinked lets go and locks the one now at that path,
so there is one holder at a time. `clean` removes what dead holders left. News: the
`pages/generation` file's mtime (and a project's own: `pages/generation-<its bucket>`, and
`pages/enriched-<its bucket>` when its wheels gained metadata), each read at most every
GENERATION_SECONDS (a stat() per request costs a memo hit dearly) and at once after a change of
this worker's own; when the disk will not take the stamp, this worker moves on alone and the
others see the change once their memos expire. Shared values: a small file under an flock (and a
thread lock: flock does not exclude this process's threads), kept in this process once it cannot
be written."""

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

from gitlab_pypi_proxy.storage.coordinator import page_bucket
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, writes_for

log = logging.getLogger("proxy.storage")

T = TypeVar("T")

_LOCK_POLL = 0.05  # seconds between tries for another worker's lock
VALUE_BYTES = 4096  # the largest shared value read, unless its user says otherwise
GENERATION_SECONDS = 0.005  # how long a worker goes on with the generation it read
_clock = time.monotonic


class LocalCoordinator:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._locks = directory / "files" / "locks"
        self._locks.mkdir(parents=True, exist_ok=True)
        self._generation_path = directory / "pages" / "generation"
        self._local = 0  # this worker's changes the generation file could not take
        # each generation file's mtime as last read, and the _clock() until which it is taken
        self._stamps: dict[Path, tuple[int, float]] = {}
        self._writes = writes_for(directory)
        self._values: dict[str, SharedFile] = {}

    def close(self) -> None:
        for value in self._values.values():
            value.close()

    # --- news of changes ----------------------------------------------------------------------

    def generation(self, page: str = "") -> tuple[int, ...]:
        everything = self._stamp(self._generation_path)
        if not page:
            return everything, self._local
        return everything, self._local, self._stamp(self._page_path(page))

    async def changed(self, page: str = "") -> None:
        try:
            await asyncio.to_thread(self.changed_now, page)
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "forgetting index pages")
            self._local += 1

    def shared_generation(self, generation: Hashable) -> str | None:
        """`generation` (one `generation()` gave) as every worker of this machine reads it from
        the stamps, or None when it counts news this worker could not write."""
        if not isinstance(generation, tuple) or len(generation) < 2 or generation[1]:
            return None
        return "-".join(str(stamp) for i, stamp in enumerate(generation) if i != 1)

    def changed_now(self, page: str = "") -> None:
        self._touch(self._page_path(page) if page else self._generation_path)

    def enrichment(self, page: str) -> int:
        return self._stamp(self._page_path(page, "enriched"))

    async def enriched(self, page: str) -> None:
        try:
            await asyncio.to_thread(self._touch, self._page_path(page, "enriched"))
        except WRITE_ERRORS as exc:
            self._writes.failed(exc, "announcing a project's metadata")

    def _touch(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        stamp = time.time_ns()
        os.utime(path, ns=(stamp, stamp))
        self._stamps.pop(path, None)  # this worker sees its own change at once

    def _page_path(self, page: str, news: str = "generation") -> Path:
        return self._generation_path.with_name(f"{news}-{page_bucket(page)}")

    def _stamp(self, path: Path) -> int:
        now = _clock()
        stamp, until = self._stamps.get(path, (0, 0.0))
        if now >= until:
            try:
                stamp = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                stamp = 0
            self._stamps[path] = (stamp, now + GENERATION_SECONDS)
        return stamp

    # --- locks --------------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, key: str, progress: Callable[[], int] | None = None
    ) -> AsyncIterator[None]:
        """The machine's lock: its waiters wait as long as the holder holds it (`progress`
        bounds only the waits of other replicas)."""
        path = self._locks / key
        while True:
            fd = await asyncio.to_thread(os.open, path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # never blocks the loop
                        break
                    except BlockingIOError:
                        await asyncio.sleep(_LOCK_POLL)
                if await asyncio.to_thread(_still_at, fd, path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # a released file: lock the one at the path now
        try:
            yield
        finally:
            await asyncio.to_thread(self._unlock, key, fd)

    @contextmanager
    def lock_now(self, key: str) -> Iterator[None]:
        path = self._locks / key
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _still_at(fd, path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            self._unlock(key, fd)

    def _unlock(self, key: str, fd: int) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._locks / key)  # while held: see the module's docstring
        os.close(fd)

    def clean(self) -> int:
        """Remove the lock files nobody holds (blocking)."""
        freed = 0
        for entry in os.scandir(self._locks):
            try:
                fd = os.open(entry.path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)  # while held, as a holder's own unlock does
                freed += 1
            finally:
                os.close(fd)
        return freed

    # --- shared values ------------------------------------------------------------------------

    def value(self, name: str, size: int = VALUE_BYTES) -> "SharedFile":
        found = self._values.get(name)
        if found is None:
            found = self._values[name] = SharedFile(self.directory / name, size)
        return found


class SharedFile:
    """A shared value in the file at `path`, of at most `size` bytes."""

    def __init__(self, path: Path, size: int = VALUE_BYTES) -> None:
        self.path, self.size = path, size
        self._lock = threading.Lock()
        self._memory: bytes | None = None  # the value while there is no file
        self._fd = _open(path)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def update(self, change: Callable[[bytes | None], tuple[bytes, T]]) -> T:
        with self._lock:
            fd = self._fd
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.pread(fd, self.size, 0) if fd is not None else self._memory
                new, result = change(current or None)
                self._memory = new
                if fd is not None:
                    try:
                        os.pwrite(fd, new, 0)
                        os.ftruncate(fd, len(new))
                    except OSError as exc:  # a read-only or full disk: kept in this process
                        log.warning("%s kept per process from now on: %s", self.path, exc.strerror)
                        self._fd = None
                        os.close(fd)
                        fd = None
                return result
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def read(self) -> bytes | None:
        with self._lock:
            fd = self._fd
            if fd is None:
                return self._memory
            fcntl.flock(fd, fcntl.LOCK_SH)  # never half of another process's write
            try:
                return os.pread(fd, self.size, 0) or None
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


def _open(path: Path) -> int | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warning("%s kept per process: cannot open it: %s", path, exc.strerror)
        return None


def _still_at(fd: int, path: Path) -> bool:
    """Is the file `fd` locks still the one at `path` (not unlinked by a holder since)?"""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
