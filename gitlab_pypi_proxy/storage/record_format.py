"""The plain format of stored records: keys and values as JSON, never pickles.

A cache directory and a shared Redis hold what the proxy fetched; reading them back must never
run code, whoever wrote there, and must not depend on where a class lives. So a record is data:
JSON's own types, tuples as arrays, sets and maps tagged (`{"set": [...]}`, `{"map": {...}}`),
and the model's records (gitlab_pypi_proxy.model's DistFile and ProjectPage) by explicit
encoders, their times as ISO 8601 strings. Decoding is validation: anything of another shape or
type raises BadRecord, which the stores turn into a record dropped (and fetched again).

Keys (tuples of text and numbers) are JSON text, so diskcache keeps them as text, not pickled.
"""

import json
import logging
from collections.abc import Hashable
from datetime import datetime
from typing import Any

from gitlab_pypi_proxy import metrics
from gitlab_pypi_proxy.model import DistFile, ProjectPage

log = logging.getLogger("proxy.storage")

# The version of this format: stores drop records of another one (they are fetched again).
FORMAT = 1

_compact = json.JSONEncoder(separators=(",", ":")).encode


class BadRecord(ValueError):
    """A stored record that is not one this format writes (malformed, or of another version)."""


_REPORTED: set[str] = set()


def dropped(store: str, exc: Exception) -> None:
    """Count a record of `store` that could not be read and is dropped; log the first of each
    store in this process."""
    metrics.DROPPED_RECORDS.labels(store).inc()
    if store not in _REPORTED:
        _REPORTED.add(store)
        log.warning(
            "a record of the %s that cannot be read is dropped (further ones are only counted"
            " in dropped_records): %s",
            store,
            exc,
        )


def encode_key(key: Hashable) -> str:
    """`key` (text, a number, or a tuple of them) as JSON text."""
    return _compact(_plain_key(key))


def decode_key(text: str) -> Hashable:
    """The key `encode_key` made `text` of. Raises BadRecord for any other text."""
    try:
        return _key(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise BadRecord(f"a key of another format: {exc}") from None


def encode(value: Any) -> str:
    """`value` in the format, with its version: ASCII text (diskcache keeps a big one in a file
    of its own and reads it back as text, never holding its bytes beside)."""
    return _compact([FORMAT, _plain(value)])


def decode(data: bytes | str) -> Any:
    """The value `encode` made `data` of. Raises BadRecord for anything else (another version
    included); never runs code."""
    try:
        found = json.loads(data)
        if not (isinstance(found, list) and len(found) == 2 and found[0] == FORMAT):
            raise BadRecord("not a record of this format")
        return _value(found[1])
    except (ValueError, TypeError, KeyError) as exc:  # BadRecord is a ValueError
        raise BadRecord(str(exc)) from None


def _plain_key(key: Hashable) -> Any:
    if isinstance(key, tuple):
        return [_plain_key(part) for part in key]
    if isinstance(key, str | int | float) and not isinstance(key, bool):
        return key
    raise TypeError(f"a record's key is {type(key).__name__}, not text, a number or a tuple")


def _key(found: Any) -> Hashable:
    if isinstance(found, list):
        return tuple(_key(part) for part in found)
    if isinstance(found, str | int | float) and not isinstance(found, bool):
        return found
    raise BadRecord(f"a key holds {type(found).__name__}")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return {"set": [_plain(v) for v in value]}
    if isinstance(value, dict):
        return {"map": {_text(k): _plain(v) for k, v in value.items()}}
    if isinstance(value, DistFile):
        return {"file": file_fields(value)}
    if isinstance(value, ProjectPage):
        return {"page": _page_fields(value)}
    raise TypeError(f"a record holds {type(value).__name__}, which the format does not keep")


def _value(found: Any) -> Any:
    if found is None or isinstance(found, str | bool | int | float):
        return found
    if isinstance(found, list):
        return tuple(_value(v) for v in found)
    if isinstance(found, dict) and len(found) == 1:
        ((tag, inner),) = found.items()
        if tag == "set" and isinstance(inner, list):
            return frozenset(_value(v) for v in inner)
        if tag == "map" and isinstance(inner, dict):
            return {k: _value(v) for k, v in inner.items()}
        if tag == "file":
            return file_of(inner)
        if tag == "page":
            return _page(inner)
    raise BadRecord(f"a value of another shape: {type(found).__name__}")


def _text(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a map's key is {type(key).__name__}, not text")
    return key


# --- the model's records ------------------------------------------------------------------------


def file_fields(file: DistFile) -> list[Any]:
    """A file's fields as JSON's types, in the order `file_of` reads them (a table keeping a
    file as columns stores them as they are)."""
    when = file.upload_time
    return [
        file.filename,
        file.sha256,
        file.source,
        file.url,
        file.requires_python,
        file.yanked,
        file.size,
        when.isoformat() if when is not None else None,
        file.core_metadata_sha256,
        file.provenance,
    ]


def file_of(found: Any) -> DistFile:
    """The DistFile `file_fields` made `found` of; raises BadRecord for anything else."""
    if not isinstance(found, list) or len(found) != 10:
        raise BadRecord("a file record of another shape")
    filename, sha256, source, url, requires, yanked, size, when, core, provenance = found
    if not (
        type(filename) is str
        and type(sha256) is str
        and type(source) is str
        and type(url) is str
        and (requires is None or type(requires) is str)
        and type(yanked) in (bool, str)
        and (size is None or type(size) is int)
        and (when is None or type(when) is str)
        and (core is None or type(core) is str)
        and (provenance is None or type(provenance) is str)
    ):
        raise BadRecord(f"a file record of other types: {filename!r}")
    time = datetime.fromisoformat(when) if when is not None else None
    return DistFile(filename, sha256, source, url, requires, yanked, size, time, core, provenance)


def _page_fields(page: ProjectPage) -> dict[str, Any]:
    # A page's files by column (one array per field): a big page's record is read with one
    # array per field beside the files it makes, not one per file.
    rows = [file_fields(f) for f in page.files]
    return {
        "name": page.name,
        "files": [list(column) for column in zip(*rows, strict=True)] if rows else [],
        "sources": list(page.sources),
        "stale": page.stale,
        "fresh_until": page.fresh_until,
        "status": page.status,
        "status_reason": page.status_reason,
        "held_versions": list(page.held_versions),
        "versions": list(page.versions) if page.versions is not None else None,
    }


def _page(found: Any) -> ProjectPage:
    if not isinstance(found, dict):
        raise BadRecord("a page record of another shape")
    versions = found["versions"]
    return ProjectPage(
        name=_checked(found["name"], str),
        files=_files(found["files"]),
        sources=_texts(found["sources"]),
        stale=_checked(found["stale"], bool),
        fresh_until=float(_checked(found["fresh_until"], int | float)),
        status=_optional(found["status"], str),
        status_reason=_optional(found["status_reason"], str),
        held_versions=frozenset(_texts(found["held_versions"])),
        versions=_texts(versions) if versions is not None else None,
    )


def _files(found: Any) -> tuple[DistFile, ...]:
    """The files of a page, from their columns; raises BadRecord for anything else."""
    if found == []:
        return ()
    if not (
        isinstance(found, list)
        and len(found) == 10
        and all(type(c) is list for c in found)
        and len({len(c) for c in found}) == 1
    ):
        raise BadRecord("a page's files of another shape")
    filenames, digests, sources, urls, requires, yanked, sizes, times, cores, provenances = found
    if not (
        _all(filenames, (str,))
        and _all(digests, (str,))
        and _all(sources, (str,))
        and _all(urls, (str,))
        and _all(requires, (str, type(None)))
        and _all(yanked, (bool, str))
        and _all(sizes, (int, type(None)))
        and _all(times, (str, type(None)))
        and _all(cores, (str, type(None)))
        and _all(provenances, (str, type(None)))
    ):
        raise BadRecord("a page's files of other types")
    when = [datetime.fromisoformat(t) if t is not None else None for t in times]
    columns = (filenames, digests, sources, urls, requires, yanked, sizes, when, cores)
    return tuple(map(DistFile, *columns, provenances))


def _all(column: list[Any], kinds: tuple[type, ...]) -> bool:
    return all(type(v) in kinds for v in column)


def _checked(value: Any, kind: Any) -> Any:
    if not isinstance(value, kind):
        raise BadRecord(f"a field holds {type(value).__name__}")
    return value


def _optional(value: Any, kind: Any) -> Any:
    return None if value is None else _checked(value, kind)


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(_checked(v, str) for v in _checked(value, list))
