"""Where files are: sha256 → the sources whose pages listed a file of that digest (a DistFile per
source), so that a file URL works without its page, on every worker of the machine.

A table of the proxy's own, `locations.db` in the cache directory
(gitlab_pypi_proxy.storage.sqlite_db): a row per (digest, source), its DistFile's fields as
columns (gitlab_pypi_proxy.storage.record_format's `file_fields`, read back through its
checks). A page of thousands of files is remembered in one statement that rewrites only the rows
that changed: a record per digest among the index records cost a read and a write each, the
largest share of a worker's time on a cold install's big pages; a JSON record per row still cost
half of the time a cold page of 15,000 files took to remember (260 ms, against 130 as columns).
Past `_MAX_ROWS` the oldest rows go. While the disk will not take a change, it is held in this
process instead (bounded); a row that cannot be read is dropped and counted."""

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from gitlab_pypi_proxy.aio import TTLMemo
from gitlab_pypi_proxy.model import DistFile
from gitlab_pypi_proxy.storage import record_format
from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.sqlite_db import Database
from gitlab_pypi_proxy.storage.writable import WRITE_ERRORS, CacheWrites

log = logging.getLogger("proxy.storage")

DATABASE = "locations.db"
# the table below, made again when it or record_format.FORMAT changes: empty, but for the rows
# of table 1 (a JSON record per row) of this FORMAT, kept as columns (pages cached before the
# upgrade still list those files)
_TABLE = 2
# a DistFile's fields, in record_format.file_fields's order; sha256 and source are the key
_FIELDS = (
    "filename",
    "sha256",
    "source",
    "url",
    "requires_python",
    "yanked",
    "size",
    "upload_time",
    "core_metadata_sha256",
    "provenance",
)
_VALUES = ", ".join(_FIELDS[3:])
_CHANGED = ", ".join(f"excluded.{f}" for f in _FIELDS[3:])
_UPSERT = f"""INSERT INTO locations ({", ".join(_FIELDS)}) VALUES ({", ".join("?" * len(_FIELDS))})
    ON CONFLICT (sha256, source) DO UPDATE SET filename = excluded.filename,
    ({_VALUES}) = ({_CHANGED})
    WHERE (filename, {_VALUES}) IS NOT (excluded.filename, {_CHANGED})"""
_MAX_ROWS = 2_000_000  # ~300 bytes each
_HELD_ENTRIES = 10_000
_STORE = "file locations"


def _make(connection: sqlite3.Connection) -> None:
    earlier = [row[1] for row in connection.execute("PRAGMA table_info(locations)")]
    connection.execute("DROP TABLE IF EXISTS earlier_locations")
    if earlier:
        connection.execute("ALTER TABLE locations RENAME TO earlier_locations")
    # columns without a type keep each value as it is given (yanked: a flag or a reason)
    columns = ", ".join(f"{f} NOT NULL" if f in ("sha256", "source") else f for f in _FIELDS)
    connection.execute(f"CREATE TABLE locations ({columns}, UNIQUE (sha256, source))")
    if "file" in earlier:
        rows = connection.execute("SELECT file FROM earlier_locations ORDER BY rowid")
        while batch := rows.fetchmany(10_000):
            connection.executemany(_UPSERT, _as_columns(text for (text,) in batch))
    connection.execute("DROP TABLE IF EXISTS earlier_locations")


def _as_columns(records: Iterable[object]) -> Iterator[list[object]]:
    """The fields of each record of table 1 that is a file of this format."""
    for text in records:
        try:
            file = record_format.decode(text) if isinstance(text, str | bytes) else None
        except record_format.BadRecord:
            continue
        if isinstance(file, DistFile):
            yield record_format.file_fields(file)


class FileLocations:
    def __init__(self, directory: Path, writes: CacheWrites) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.writes = writes
        self._db = Database(directory / DATABASE)
        self._db.made(_TABLE * 1000 + record_format.FORMAT, _make)
        self._held: TTLMemo[str, Entry] = TTLMemo(_HELD_ENTRIES)

    def close(self) -> None:
        self._db.close()

    async def of(self, sha256: str) -> list[DistFile]:
        """Every source known to offer a file of this digest."""
        known = await asyncio.to_thread(self._stored, sha256)
        held = self._held.get(sha256)
        return list({**known, **(held.value if held else {})}.values())

    def of_now(self, sha256: str) -> list[DistFile]:
        """`of`, from the stored rows only (blocking: the operator API's listing)."""
        return list(self._stored(sha256).values())

    async def remember(self, files: Iterable[DistFile]) -> None:
        """Record which source offers each file."""
        files = list(files)
        try:
            await asyncio.to_thread(self.remember_now, files)
        except WRITE_ERRORS as exc:
            self.writes.failed(exc, "keeping file locations")
            now = time.time()
            for file in files:
                held = self._held.get(file.sha256)
                merged = {**(held.value if held else {}), file.source: file}
                self._held.set(file.sha256, Entry(merged, now))

    def remember_now(self, files: Iterable[DistFile]) -> None:
        """`remember` for the command line (blocking)."""
        rows = [record_format.file_fields(f) for f in files]
        if not rows:
            return
        with self._db.writing() as connection:
            connection.executemany(_UPSERT, rows)
            ((first, last),) = connection.execute(
                "SELECT min(rowid), max(rowid) FROM locations"
            ).fetchall()
            if last - first >= _MAX_ROWS:  # rowids grow with each row added: the oldest go
                connection.execute(
                    "DELETE FROM locations WHERE rowid <= ?", (last - _MAX_ROWS * 9 // 10,)
                )

    def items_now(self) -> Iterator[tuple[str, list[DistFile]]]:
        """Every digest with the files listed of it, by digest (blocking: the command line)."""
        cursor = self._db.sql("SELECT DISTINCT sha256 FROM locations ORDER BY sha256")
        for (sha256,) in cursor.fetchall():
            files = list(self._stored(sha256).values())
            if files:
                yield sha256, files

    def _stored(self, sha256: str) -> dict[str, DistFile]:
        rows = self._db.sql(
            f"SELECT {', '.join(_FIELDS)} FROM locations WHERE sha256 = ?", (sha256,)
        ).fetchall()
        found: dict[str, DistFile] = {}
        for row in rows:
            source = row[2]
            try:
                file = record_format.file_of(_yanked_as_given(list(row)))
            except record_format.BadRecord as exc:
                record_format.dropped(_STORE, exc)
                self._forget_row(sha256, source)
                continue
            found[source] = file
        return found

    def _forget_row(self, sha256: str, source: object) -> None:
        try:
            with self._db.writing() as connection:
                connection.execute(
                    "DELETE FROM locations WHERE sha256 = ? AND source = ?", (sha256, source)
                )
        except WRITE_ERRORS as exc:
            self.writes.failed(exc, "dropping a file location")


def _yanked_as_given(fields: list[object]) -> list[object]:
    """The row's fields with its yanked flag a flag again: SQLite keeps True and False as 1 and
    0 (a reason stays text; anything else is left for file_of to refuse)."""
    yanked = fields[5]
    if type(yanked) is int and yanked in (0, 1):
        fields[5] = bool(yanked)
    return fields
