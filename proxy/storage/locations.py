"""Where files are: sha256 → the sources whose pages listed a file of that digest (a DistFile per
source), so that a file URL works without its page. Kept among the index records
(proxy.storage.pages) under keys of its own; while the disk will not take a change, it is held
in this process instead (bounded).
"""

import asyncio
import time
from collections.abc import Iterable

from proxy.aio import TTLMemo
from proxy.model import DistFile
from proxy.storage.pages import Entry, PageStore
from proxy.storage.writable import WRITE_ERRORS

_HELD_ENTRIES = 10_000


def location_key(sha256: str) -> tuple[str, str]:
    """The record of where the files of digest `sha256` are."""
    return ("file", sha256)


def sha256_of(key: object) -> str | None:
    """The digest whose locations record `key` is, or None when it is no such record."""
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "file":
        return str(key[1])
    return None


class FileLocations:
    def __init__(self, store: PageStore) -> None:
        self.store = store
        self._held: TTLMemo[str, Entry] = TTLMemo(_HELD_ENTRIES)

    async def of(self, sha256: str) -> list[DistFile]:
        """Every source known to offer a file of this digest."""
        known = await asyncio.to_thread(self.store.get_now, location_key(sha256))
        held = self._held.get(sha256)
        return list({**(known or {}), **(held.value if held else {})}.values())

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

        def add(file: DistFile):  # type: ignore[no-untyped-def]
            def change(known: dict[str, DistFile] | None) -> dict[str, DistFile] | None:
                if known is not None and known.get(file.source) == file:
                    return known  # unchanged: nothing written
                return {**(known or {}), file.source: file}

            return change

        self.store.update_now([(location_key(f.sha256), add(f)) for f in files])
