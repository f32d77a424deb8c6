"""Carry a warm cache to another machine: `cache export BUNDLE.tar` and `cache import BUNDLE.tar`.

A bundle is a plain tar, written and read as a stream (constant memory, any size): `bundle.json`
(format marker), `index.jsonl` (index pages, project lists, file locations and which sources
delivered each file, one JSON per line) and `files/<sha256>/<filename>`. JSON, not pickle:
importing a bundle from elsewhere must never run code. Every file is hashed again on import and
kept only if it matches; a bad one is named and skipped. Delivery records cannot be checked
offline: they are taken as the exporting proxy kept them (a bundle is trusted as the cache
directory is); a file without one is served only to readers of every source until a source
delivers it. A bundle larger than `max_size` keeps its last files, and the import names the rest."""

import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from gitlab_pypi_proxy.errors import HashMismatch
from gitlab_pypi_proxy.index.cached import NamesKey, PageKey, parse_key
from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.names import InvalidName, is_sha256, validate, validate_filename
from gitlab_pypi_proxy.storage.deliveries import delivered_sha256
from gitlab_pypi_proxy.storage.downloads import Downloads
from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.stores import Stores

FORMAT = "gitlab-pypi-proxy-bundle"
VERSION = 1


class BundleError(Exception):
    """A bundle that cannot be read or written at all, as one line."""


@dataclass
class ImportReport:
    files: int = 0
    bytes: int = 0
    pages: int = 0
    bad: list[str] = field(default_factory=list)  # one line each: what and why
    not_kept: list[str] = field(default_factory=list)  # imported, then evicted for max_size
    not_kept_bytes: int = 0


# --- JSON form of the index records --------------------------------------------------------


def _file_json(file: DistFile) -> dict[str, Any]:
    data = asdict(file)
    data["upload_time"] = file.upload_time.isoformat() if file.upload_time else None
    return data


def _file_from(data: dict[str, Any]) -> DistFile:
    data = dict(data)
    validate_filename(data["filename"])
    if not is_sha256(data["sha256"]):
        raise ValueError("not a sha256")
    if data.get("upload_time"):
        data["upload_time"] = datetime.fromisoformat(data["upload_time"])
    return DistFile(**data)


def _record(raw: Any, value: Any) -> dict[str, Any] | None:
    """An index record as JSON, or None for kinds a bundle does not carry."""
    key = parse_key(raw)
    if isinstance(key, PageKey) and isinstance(value, Entry):
        page = value.value
        return {
            "kind": "page",
            "source": key.source,
            "name": key.name,
            "fetched_at": value.fetched_at,
            "files": None if page is None else [_file_json(f) for f in page.files],
        }
    if isinstance(key, NamesKey) and isinstance(value, Entry):
        return {
            "kind": "names",
            "source": key.source,
            "fetched_at": value.fetched_at,
            "names": sorted(value.value),
        }
    sha256 = delivered_sha256(raw)
    if sha256 is not None and isinstance(value, Entry) and isinstance(value.value, frozenset):
        return {"kind": "delivered", "sha256": sha256, "sources": sorted(value.value)}
    return None


def _apply(record: dict[str, Any], stores: Stores) -> bool:
    """Store one record; True if it changed the cache. Raises ValueError/KeyError/TypeError."""
    kind = record["kind"]
    if kind == "page":
        name = validate(record["name"])
        files = record["files"]
        page = None
        if files is not None:
            parsed = tuple(_file_from(f) for f in files)
            page = ProjectPage(name=name, files=parsed, sources=(str(record["source"]),))
        entry = Entry(page, float(record["fetched_at"]))
        return stores.pages.keep(PageKey(str(record["source"]), name).raw, entry)
    if kind == "names":
        names = frozenset(validate(n) for n in record["names"])
        entry = Entry(names, float(record["fetched_at"]))
        return stores.pages.keep(NamesKey(str(record["source"])).raw, entry)
    if kind == "file":
        stores.locations.remember_now(_file_from(f) for f in record["files"])
        return False
    if kind == "delivered":
        sources = record["sources"]
        if not is_sha256(record["sha256"]) or not all(isinstance(s, str) for s in sources):
            raise ValueError("not a sha256 and a list of source names")
        stores.deliveries.add_now(record["sha256"], sources)
        return False
    raise ValueError(f"unknown kind {kind!r}")


# --- export -----------------------------------------------------------------------------------


def export(stores: Stores, bundle: Path) -> tuple[int, int]:
    """Write every index record and every file to `bundle`. Returns (files, index records).

    Written to a temporary name first: a failed export never leaves a truncated bundle.
    """
    pages, blobs = stores.pages, stores.blobs
    names: dict[str, str] = {}
    part = bundle.with_name(bundle.name + ".part")
    try:
        with (
            tempfile.TemporaryFile() as index,
            tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar,
        ):
            records = 0
            for key, value in pages.items():
                record = _record(key, value)
                if record is None:
                    continue
                index.write(json.dumps(record).encode() + b"\n")
                records += 1
            for sha256, files in stores.locations.items_now():
                names[sha256] = files[0].filename
                record = {"kind": "file", "sha256": sha256, "files": [_file_json(f) for f in files]}
                index.write(json.dumps(record).encode() + b"\n")
                records += 1
            _add_bytes(
                tar, "bundle.json", json.dumps({"format": FORMAT, "version": VERSION}).encode()
            )
            size = index.tell()
            index.seek(0)
            _add(tar, "index.jsonl", index, size, time.time())
            count = 0
            for sha256 in blobs.digests():
                blob = blobs.open_now(sha256)
                if blob is None:
                    continue  # evicted meanwhile
                try:
                    filename = names.get(sha256)
                    member = f"files/{sha256}/{filename}" if filename else f"files/{sha256}"
                    _add(tar, member, blob.reader(), blob.size, blob.mtime)
                finally:
                    blob.close()
                count += 1
        os.replace(part, bundle)
    except OSError as exc:
        raise BundleError(f"cannot write {bundle}: {exc.strerror or exc}") from None
    finally:
        part.unlink(missing_ok=True)  # after a failure or an interrupt; gone after os.replace
    return count, records


def _add(tar: tarfile.TarFile, name: str, handle: BinaryIO, size: int, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    tar.addfile(info, handle)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    _add(tar, name, io.BytesIO(data), len(data), time.time())


# --- import -----------------------------------------------------------------------------------


def _members(bundle: Path) -> Iterator[tuple[tarfile.TarInfo, BinaryIO | None]]:
    try:
        with tarfile.open(bundle, "r|*") as tar:
            for member in tar:
                yield member, tar.extractfile(member) if member.isfile() else None
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"cannot read {bundle}: {exc}") from None


def import_bundle(stores: Stores, bundle: Path) -> ImportReport:
    """Add a bundle's files (each verified again) and index records to the caches."""
    pages = stores.pages
    report = ImportReport()
    imported: list[tuple[str, str, int]] = []  # (sha256, label, size)
    seen_format = False
    for member, content in _members(bundle):
        if member.name == "bundle.json" and content is not None:
            try:
                header = json.loads(content.read(4096))
            except ValueError:
                header = None
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise BundleError(f"{bundle}: not a gitlab-pypi-proxy bundle")
            seen_format = True
        elif not seen_format:
            raise BundleError(f"{bundle}: not a gitlab-pypi-proxy bundle (no bundle.json first)")
        elif member.name == "index.jsonl" and content is not None:
            _import_index(content, stores, report)
        elif member.name.startswith("files/") and content is not None:
            imported += _import_file(member.name, content, stores.downloads, report)
        else:
            report.bad.append(f"{member.name}: unexpected member, skipped")
    if not seen_format:
        raise BundleError(f"{bundle}: not a gitlab-pypi-proxy bundle (empty)")
    pages.announce()
    for sha256, label, size in imported:
        if sha256 not in stores.blobs:
            report.not_kept.append(f"{label} ({size} bytes)")
            report.not_kept_bytes += size
    return report


def _import_index(content: BinaryIO, stores: Stores, report: ImportReport) -> None:
    for number, line in enumerate(content, 1):  # bytes lines: json reads UTF-8 itself
        try:
            report.pages += _apply(json.loads(line), stores)
        except (ValueError, KeyError, TypeError, InvalidName) as exc:
            report.bad.append(f"index.jsonl line {number}: {type(exc).__name__}: {exc}")


def _import_file(
    name: str, content: BinaryIO, downloads: Downloads, report: ImportReport
) -> list[tuple[str, str, int]]:
    """Add one file; the (sha256, label, size) it added, to look for once all are in."""
    parts = name.split("/")
    sha256 = parts[1] if len(parts) in (2, 3) else ""
    label = parts[-1] if len(parts) == 3 else name
    if not is_sha256(sha256):
        report.bad.append(f"{name}: not named files/<sha256>/<filename>, skipped")
        return []
    try:
        size = downloads.add(sha256, content)
    except HashMismatch as exc:
        report.bad.append(f"{label}: sha256 mismatch ({exc}), not imported")
        return []
    report.bytes += size
    report.files += 1
    return [(sha256, label, size)]
