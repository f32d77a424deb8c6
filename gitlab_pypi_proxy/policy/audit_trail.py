"""The audit trail: one JSON line per file served, per upload and per operator action, and the
query that answers "which builds installed the compromised release?" (`gitlab-pypi-proxy audit
--package NAME[==VERSION]` / `--sha256`).

A line names who (a user, `anonymous`, or `gitlab:<12 hex digits of the token's sha256>`: never
a token, yet a leaked one can be found), from where, which file, source and cache outcome, and
the advisories of a vulnerable file served anyway. `record` never blocks the event loop: a
bounded queue, a writer thread. Worker processes share the file: O_APPEND, one write(2) a line,
and rotation by size under an flock on `<path>.lock`, so no line is split or written to a
dropped file. What can be lost is counted and logged: entries queued when a process is killed or
past QUEUE_SIZE on a stalled disk (`dropped`), failed writes (`failed`; a fragment cut by a full
disk reads as one unreadable line)."""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.names import (
    InvalidName,
    file_project_name,
    file_version,
    normalize,
    validate,
)

log = logging.getLogger("proxy.audit")

QUEUE_SIZE = 100_000  # entries waiting for the writer; past this they are dropped and counted
BATCH = 512  # lines appended under one hold of the shared lock
MODE = 0o640  # user names and client addresses: not for every local user
_ROTATED = re.compile(r"\.(\d+)$")
_LOG_EVERY = 100  # failures and drops are logged at the first and then every this many


def identity_label(user: str | None, passthrough_token: str | None = None) -> str:
    """Who received a file, as the trail names them: a proxy user's name, `gitlab:<hash>` for
    GitLab credentials passed through (a hash of the token, never the token), or `anonymous`."""
    if user:
        return "".join(c for c in user if c.isprintable() and not c.isspace())[:64] or "?"
    if passthrough_token:
        return "gitlab:" + hashlib.sha256(passthrough_token.encode()).hexdigest()[:12]
    return "anonymous"


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    """UTC to the millisecond, e.g. 2025-06-10T12:00:00.123Z: sorts as text in time order."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AuditEntry:
    """One file served (`download`) or uploaded (`upload`), or an operator's action on a project
    (`refresh`, `yank`, `unyank`: `project` and `version` say which), a file (`purge`) or the
    cache (`projects`: the cached projects listed)."""

    event: Literal["download", "upload", "refresh", "purge", "yank", "unyank", "projects"]
    identity: str  # from identity_label
    client: str  # the client's address
    filename: str
    sha256: str
    source: str
    cache: str = "-"  # the cache outcome (hit, miss, stale, ...); "-" for uploads
    advisories: tuple[str, ...] = ()  # ids of the advisories of a vulnerable file served anyway
    notes: tuple[str, ...] = ()  # other policy notes (exempted, provenance verified, ...)
    time: datetime = field(default_factory=_now)
    project: str | None = None  # else the file name's
    version: str | None = None

    def line(self) -> bytes:
        record = {
            "time": _timestamp(self.time),
            "event": self.event,
            "identity": self.identity,
            "client": self.client,
            "file": self.filename,
            "project": self.project or file_project_name(self.filename),
            "version": self.version or file_version(self.filename),
            "sha256": self.sha256,
            "source": self.source,
            "cache": self.cache,
            "advisories": list(self.advisories),
            "notes": list(self.notes),
        }
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


@dataclass
class TrailStats:
    written: int = 0
    dropped: int = 0  # the queue was full
    failed: int = 0  # a write failed or was cut short


class AuditTrail:
    """Appends entries to `path` from a writer thread; see the module docstring. One per
    process, made after the process started (a writer thread does not survive a fork)."""

    def __init__(self, path: Path, *, max_size: int, keep: int, queue_size: int = QUEUE_SIZE):
        self.path, self.max_size, self.keep = Path(path), max_size, keep
        self.stats = TrailStats()
        self._queue: queue.Queue[AuditEntry | None] = queue.Queue(queue_size)
        self._fd = -1
        self._lock_fd = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the file (raises OSError saying why it cannot be) and start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MODE)
        self._fd = self._open()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def record(self, entry: AuditEntry) -> None:
        """Queue `entry` for writing; never blocks (a full queue drops it, counted)."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.stats.dropped += 1
            if self.stats.dropped % _LOG_EVERY == 1:
                log.warning(
                    "audit trail %s: %d entries dropped, the writer is behind",
                    self.path,
                    self.stats.dropped,
                )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (waiting up to `timeout` seconds), then stop and close."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, MODE)

    def _run(self) -> None:
        while True:
            entries = [self._queue.get()]
            while len(entries) < BATCH:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(e is None for e in entries)
            lines = [e.line() for e in entries if e is not None]
            if lines:
                try:
                    self._append(lines)
                except OSError as exc:
                    self._failed(len(lines), exc)
                except Exception:  # the writer must outlive any one batch: say it and go on
                    log.exception("audit trail %s: %d entries not written", self.path, len(lines))
                    self.stats.failed += len(lines)
            if stop:
                return

    def _append(self, lines: list[bytes]) -> None:
        """Append `lines` in order, rotating whenever the file reaches max_size."""
        while lines:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            try:
                self._follow()
                size = os.fstat(self._fd).st_size
                while lines and size < self.max_size:
                    size = self._write(lines.pop(0))
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if size >= self.max_size:
                self._rotate()

    def _write(self, line: bytes) -> int:
        """One line, one write(2); the file's size after it."""
        try:
            sent = os.write(self._fd, line)
            if sent < len(line):  # the disk filled midway: end the fragment, never join lines
                with contextlib.suppress(OSError):
                    os.write(self._fd, b"\n")
                raise OSError("write cut short")
            self.stats.written += 1
        except OSError as exc:
            self._failed(1, exc)
        return os.fstat(self._fd).st_size

    def _follow(self) -> None:
        """Reopen `path` if another process rotated the file this descriptor still writes."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(self._fd)
        if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
            fd = self._open()
            os.close(self._fd)
            self._fd = fd

    def _rotate(self) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._follow()
            if os.fstat(self._fd).st_size < self.max_size:
                return  # another process rotated it first
            for i in range(self.keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.rename(self.path, f"{self.path}.1")
            self._follow()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _failed(self, count: int, exc: OSError) -> None:
        before, self.stats.failed = self.stats.failed, self.stats.failed + count
        if before == 0 or before // _LOG_EVERY != self.stats.failed // _LOG_EVERY:
            log.error(
                "audit trail %s: %d entries not written: %s", self.path, self.stats.failed, exc
            )


# --- reading the trail back ---------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One line of the trail, read back."""

    time: str
    event: str
    identity: str
    client: str
    file: str
    project: str | None
    version: str | None
    sha256: str
    source: str
    cache: str
    advisories: tuple[str, ...]
    notes: tuple[str, ...]

    def describe(self) -> str:
        """One line for people: when, who, from where, what, which source, notes."""
        extra = [*self.advisories, *self.notes]
        parts = [
            self.time,
            self.event,
            self.identity,
            self.client,
            self.file,
            f"sha256={self.sha256}",
            self.source,
            f"cache={self.cache}",
        ]
        return "  ".join(parts + ([", ".join(extra)] if extra else []))


@dataclass
class QueryResult:
    deliveries: list[Delivery]
    unreadable_lines: int = 0  # lines that are not a record (a cut-short write, an edit)
    files: list[Path] = field(default_factory=list)  # what was read, oldest first


def trail_files(path: Path) -> list[Path]:
    """The current file and its rotated copies that exist, oldest first."""
    rotated = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            if candidate.name.startswith(path.name + "."):
                match = _ROTATED.search(candidate.name[len(path.name) :])
                if match and candidate.name == f"{path.name}.{match.group(1)}":
                    rotated.append((int(match.group(1)), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    return files + ([path] if path.is_file() else [])


def parse_package(text: str) -> tuple[str, str | None]:
    """`NAME` or `NAME==VERSION` → (normalized name, version or None). Raises ValueError."""
    name, pinned, version = text.partition("==")
    try:
        normalized = validate(name.strip())
    except InvalidName as exc:
        raise ValueError(str(exc)) from None
    if not pinned:
        return normalized, None
    try:
        Version(version.strip())
    except InvalidVersion:
        raise ValueError(f"not a version: {version.strip()!r}") from None
    return normalized, version.strip()


def _matches(
    record: dict[str, Any], package: str | None, version: str | None, sha256: str | None
) -> bool:
    if sha256 is not None and record.get("sha256", "").lower() != sha256.lower():
        return False
    if package is not None:
        project = record.get("project") or ""
        if not project or normalize(project) != normalize(package):
            return False
    if version is not None:
        try:
            return Version(record.get("version") or "") == Version(version)
        except InvalidVersion:
            return False
    return True


def _lines(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
            yield from handle


def query(
    path: Path, *, package: str | None = None, version: str | None = None, sha256: str | None = None
) -> QueryResult:
    """Every delivery in the trail (current and rotated files) of `package` (any spelling;
    `version` compared as a PEP 440 version) and/or of the file with `sha256`, in time order."""
    files = trail_files(Path(path))
    result = QueryResult(deliveries=[], files=files)
    for raw in _lines(files):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            if not _matches(record, package, version, sha256):
                continue
            result.deliveries.append(
                Delivery(
                    time=str(record["time"]),
                    event=str(record["event"]),
                    identity=str(record["identity"]),
                    client=str(record["client"]),
                    file=str(record["file"]),
                    project=record.get("project"),
                    version=record.get("version"),
                    sha256=str(record["sha256"]),
                    source=str(record["source"]),
                    cache=str(record.get("cache", "-")),
                    advisories=tuple(map(str, record.get("advisories") or ())),
                    notes=tuple(map(str, record.get("notes") or ())),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            result.unreadable_lines += 1
    result.deliveries.sort(key=lambda d: d.time)  # rotation can put a line a file early
    return result
