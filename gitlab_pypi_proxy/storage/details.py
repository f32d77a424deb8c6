"""PEP 700 details of GitLab files, kept for good on disk and shared by every worker.

Per source and project name, two records:
- `files`: each file's exact size and upload time, from GitLab's `package_files` (by file name
  and sha256: a file that is replaced under the same name has another digest and is asked again);
- `versions`: each version's package ids and creation time, from the Packages API listing, or
  the time it was sought there and not found.

Neither changes once known, so nothing expires; writes merge into what another worker may have
written meanwhile. Every disk call runs in a thread.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gitlab_pypi_proxy.storage import pickles
from gitlab_pypi_proxy.storage.disk_caches import open_cache

log = logging.getLogger("proxy.cache.details")

FileKey = tuple[str, str]  # (file name, sha256)
Exact = dict[FileKey, tuple[int, datetime]]  # → (size, upload time)


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
                self._disk = open_cache(
                    directory / "details", eviction_policy="none", disk=pickles.Disk
                )
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
            return self._disk.get(key)
        except (OSError, sqlite3.Error) as exc:
            log.warning("PEP 700 details of %s unreadable: %s", key[2], exc)
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
                self._disk.set(key, _merged(self._disk.get(key) or {}, new, keep_old, drop))
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
