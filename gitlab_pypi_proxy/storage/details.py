"""PEP 700 details of GitLab files, kept for good on disk and shared by every worker.

Per source and project name, two records:
- `files`: each file's exact size and upload time, from GitLab's `package_files` (by file name
  and sha256: a file that is replaced under the same name has another digest and is asked again);
- `versions`: each version's package ids and creation time, from the Packages API listing, or
  the time it was sought there and not found.

Neither changes once known, so nothing expires; writes merge into what another worker may have
written meanwhile. Every disk call runs in a thread.

Records are plain JSON with a format version (gitlab_pypi_proxy.storage.record_format): a cache of
another version is emptied when opened, and a record that cannot be read is dropped. Either way
the details are rebuilt: GitLab is asked again for the projects served next.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gitlab_pypi_proxy.storage import record_format
from gitlab_pypi_proxy.storage.disk_caches import open_cache
from gitlab_pypi_proxy.storage.record_format import BadRecord, dropped, encode_key

log = logging.getLogger("proxy.cache.details")

FileKey = tuple[str, str]  # (file name, sha256)
Exact = dict[FileKey, tuple[int, datetime]]  # → (size, upload time)
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Version:
    """A version as the Packages API lists it: its packages (one per project holding it) and
    when the first was created; or, with no packages, when it was sought and not found."""

    created_at: datetime | None
    packages: tuple[tuple[int, int | None], ...] = ()  # (package id, project id or None)
    sought_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Known:
    files: Exact = field(default_factory=dict)
    versions: dict[str, Version] = field(default_factory=dict)


class DetailsStore:
    def __init__(self, directory: Path | None) -> None:
        """`directory` None: kept in this process only (tests, a cache that cannot be opened)."""
        self._disk: Any = None
        self._memory: dict[tuple[str, str, str], Any] = {}
        if directory is not None:
            try:
                self._disk = open_cache(directory / "details", _FORMAT, eviction_policy="none")
            except (OSError, sqlite3.Error) as exc:
                log.warning("PEP 700 details kept in memory: cannot open the cache: %s", exc)

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()

    async def read(self, source: str, name: str) -> Known:
        return await asyncio.to_thread(self._read, source, name)

    def _read(self, source: str, name: str) -> Known:
        return Known(
            files=self._get(("files", source, name)) or {},
            versions=self._get(("versions", source, name)) or {},
        )

    async def add_files(self, source: str, name: str, files: Exact) -> None:
        if files:
            await asyncio.to_thread(self._merge, ("files", source, name), files)

    async def add_versions(self, source: str, name: str, versions: dict[str, Version]) -> None:
        """Merge `versions`; a version found is not turned into "not found" by a later search."""
        if versions:
            await asyncio.to_thread(self._merge, ("versions", source, name), versions, _found_wins)

    async def drop_versions(self, source: str, name: str, versions: set[str]) -> None:
        """Forget versions whose packages are gone (deleted, re-created under new ids)."""
        if versions:
            await asyncio.to_thread(self._merge, ("versions", source, name), {}, None, versions)

    def _get(self, key: tuple[str, str, str]) -> Any:
        if self._disk is None:
            return self._memory.get(key)
        try:
            return self._stored(key)
        except (OSError, sqlite3.Error) as exc:
            log.warning("PEP 700 details of %s unreadable: %s", key[2], exc)
            return None

    def _stored(self, key: tuple[str, str, str]) -> dict | None:
        """The stored details of `key`; None when there are none or they cannot be read."""
        data = self._disk.get(encode_key(key))
        try:
            return None if data is None else _decoded(key[0], data)
        except BadRecord as exc:
            dropped("pep700 details", exc)
            return None

    def _merge(
        self,
        key: tuple[str, str, str],
        new: dict,
        keep_old: Callable[[Any, Any], bool] | None = None,
        drop: Collection[str] = (),
    ) -> None:
        if self._disk is None:
            self._memory[key] = _merged(self._memory.get(key) or {}, new, keep_old, drop)
            return
        try:
            with self._disk.transact():
                merged = _merged(self._stored(key) or {}, new, keep_old, drop)
                self._disk.set(encode_key(key), _encoded(key[0], merged))
        except (OSError, sqlite3.Error) as exc:  # a full or read-only disk: asked again later
            log.warning("PEP 700 details of %s not kept: %s", key[2], exc)


def _merged(
    old: dict, new: dict, keep_old: Callable[[Any, Any], bool] | None, drop: Collection[str]
) -> dict:
    merged = {k: v for k, v in old.items() if k not in drop}
    for key, value in new.items():
        if keep_old is None or key not in merged or not keep_old(merged[key], value):
            merged[key] = value
    return merged


def _found_wins(old: Version, new: Version) -> bool:
    return bool(old.packages) and not new.packages


def _encoded(kind: str, details: dict) -> bytes:
    if kind == "files":
        rows = tuple((n, d, size, when.isoformat()) for (n, d), (size, when) in details.items())
        return record_format.encode(rows)
    return record_format.encode(
        {
            version: (
                v.created_at.isoformat() if v.created_at is not None else None,
                v.packages,
                v.sought_at,
            )
            for version, v in details.items()
        }
    )


def _decoded(kind: str, data: bytes) -> dict:
    """The details `_encoded` wrote; raises BadRecord for anything else."""
    found = record_format.decode(data)
    try:
        if kind == "files":
            return {
                (_text(n), _text(d)): (_whole(size), datetime.fromisoformat(_text(when)))
                for n, d, size, when in found
            }
        return {_text(version): _version(*fields) for version, fields in found.items()}
    except (ValueError, TypeError, AttributeError) as exc:  # BadRecord is a ValueError
        raise BadRecord(f"{kind} details of another shape: {exc}") from None


def _version(created_at: str | None, packages: tuple, sought_at: float) -> Version:
    ids = tuple((_whole(p), None if j is None else _whole(j)) for p, j in packages)
    created = datetime.fromisoformat(_text(created_at)) if created_at is not None else None
    if isinstance(sought_at, bool) or not isinstance(sought_at, int | float):
        raise BadRecord(f"sought at {type(sought_at).__name__}")
    return Version(created, ids, float(sought_at))


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise BadRecord(f"{type(value).__name__}, not text")
    return value


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRecord(f"{type(value).__name__}, not a whole number")
    return value
