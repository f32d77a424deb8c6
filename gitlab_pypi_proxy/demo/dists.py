"""Build small, valid wheels and sdists in memory for the tests and the benchmark data set."""

import hashlib
import io
import tarfile
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Sequence

from packaging.utils import canonicalize_name

_EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed zip dates: the same inputs give the same bytes


def _dist_name(name: str) -> str:
    return canonicalize_name(name).replace("-", "_")


def _metadata(
    name: str,
    version: str,
    requires_dist: list[str],
    requires_python: str | None,
    fields: Sequence[str] = (),
) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *fields]
    lines += [f"Requires-Dist: {r}" for r in requires_dist]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    return "\n".join(lines) + "\n\n"


def _record_line(path: str, data: bytes) -> str:
    digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    name: str,
    version: str,
    *,
    requires_dist: list[str] | None = None,
    requires_python: str | None = None,
    pad_bytes: int = 0,
    fields: Sequence[str] = (),
) -> tuple[str, bytes]:
    """(file name, bytes) of a pure-Python wheel; `pad_bytes` adds an incompressible-size member,
    `fields` more METADATA lines ("Summary: ...")."""
    dist = _dist_name(name)
    info = f"{dist}-{version}.dist-info"
    members = {
        f"{dist}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": _metadata(
            name, version, requires_dist or [], requires_python, fields
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    if pad_bytes:
        members[f"{dist}/padding.bin"] = b"\0" * pad_bytes
    record = [_record_line(path, data) for path, data in members.items()]
    members[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in members.items():
            entry = zipfile.ZipInfo(path, _EPOCH)
            entry.compress_type = (
                zipfile.ZIP_STORED if path.endswith(".bin") else zipfile.ZIP_DEFLATED
            )
            archive.writestr(entry, data)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue()


def make_sdist(name: str, version: str) -> tuple[str, bytes]:
    """(file name, bytes) of a minimal sdist with PKG-INFO, enough for twine to read."""
    dist = _dist_name(name)
    root = f"{dist}-{version}"
    files = {
        f"{root}/PKG-INFO": _metadata(name, version, [], None).encode(),
        f"{root}/pyproject.toml": (
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        ).encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for path, data in files.items():
            member = tarfile.TarInfo(path)
            member.size, member.mtime = len(data), 1577836800
            archive.addfile(member, io.BytesIO(data))
    return f"{root}.tar.gz", buffer.getvalue()
