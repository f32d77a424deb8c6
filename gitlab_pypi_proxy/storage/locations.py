"""Where files are: sha256 → the sources whose pages listed a file of that digest (a DistFile per
source), so that a file URL works without its page. Kept among the index records
(gitlab_pypi_proxy.storage.pages) under keys of its own; while the disk will not take a change, it
is held in this process instead (bounded)."""

import asyncio
import time
from collections.abc import Iterable

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.model import DistFile
from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.records import RecordStore
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS

_HELD_ENTRIES = 10_000
_AT_ONCE = 200  # records per transaction: a page of 10,000 files must not hold up other writes


def location_key(sha256: str) -> tuple[str, str]:
    """The record of where the files of digest `sha256` are."""
    return ("file", sha256)


def sha256_of(key: object) -> str | None:
    """The digest whose locations record `key` is, or None when it is no such record."""
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "file":
        return str(key[1])
    return None


class FileLocations:
    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._held: TTLMemo[str, Entry] = TTLMemo(_HELD_ENTRIES)

    async def of(self, sha256: str) -> list[DistFile]:
        """Every source known to offer a file of this digest."""
        known = await asyncio.to_thread(self.store.get_now, location_key(sha256))
        held = self._held.get(sha256)
        return list({**(known or {}), **(held.value if held else {})}.values())

    def of_now(self, sha256: str) -> list[DistFile]:
        """`of`, from the stored records only (blocking: the operator API's listing)."""
        return list((self.store.get_now(location_key(sha256)) or {}).values())

    async def remember(self, files: Iterable[DistFile]) -> None:
        """Record which source offers each file."""
        files = list(files)
        try:
            await asyncio.to_thread(self.remember_now, files)
        except WRITE_ERRORS as exc:
            self.store.writes.failed(exc, "keeping file locations")
            now = time.time()
            for file in files:
                held = self._held.get(file.sha256)
                merged = {**(held.value if held else {}), file.source: file}
                self._held.set(file.sha256, Entry(merged, now))

    def remember_now(self, files: Iterable[DistFile]) -> None:
        """`remember` for the command line (blocking)."""
        files = list(files)
        store = self.store
        for start in range(0, len(files), _AT_ONCE):
            with store.transact():
                for file in files[start : start + _AT_ONCE]:
                    key = ("file", file.sha256)  # location_key, inline: 10,000 files a page
                    known: dict[str, DistFile] = store.get_now(key) or {}
                    if known.get(file.source) != file:
                        store.set_now(key, {**known, file.source: file})
