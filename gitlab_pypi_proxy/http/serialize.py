"""Model → PEP 503 HTML or PEP 691 JSON, and the content negotiation that picks one.

Rendering runs in a thread (http/app.py), and a page may list a hundred thousand files: it is
written a file at a time, in small C calls (one `json.dumps` of a whole page would hold the GIL,
and so stop the event loop, for the whole of it), and encoded to bytes in batches, so no second
copy of the whole page is built as text. `render` hashes and gzips the batches as they come: a
page bigger than KEEP_PLAIN is never held whole, only as its gzip copy (a fifth of it: what pip
and uv take), which a client without gzip gets decompressed.

`rendered` makes any answer body a `Rendered` (ETag, gzip copy), the JSON API's too.
"""

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from html import escape
from itertools import chain
from urllib.parse import quote

from packaging.version import Version

from gitlab_pypi_proxy.model import DistFile, ProjectList, ProjectPage
from gitlab_pypi_proxy.names import file_versions

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
JSON_API = "application/json"  # the PyPI JSON API (http/json_api.py), never negotiated

_ALIASES = {
    JSON: JSON,
    "application/vnd.pypi.simple.latest+json": JSON,
    HTML: HTML,
    "application/vnd.pypi.simple.latest+html": HTML,
    TEXT_HTML: TEXT_HTML,
    "json": JSON,
    "html": TEXT_HTML,
}
# On equal quality, a plain browser or curl (*/*) gets HTML; a client naming JSON gets JSON.
_PREFERENCE = {TEXT_HTML: 2, JSON: 1, HTML: 0}
CONTENT_TYPES = {
    JSON: JSON,
    HTML: HTML,
    TEXT_HTML: "text/html; charset=utf-8",
    JSON_API: JSON_API,
}


def _ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q))
    return ranges


def _quality(media: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """RFC 9110: the most specific range that matches decides the quality."""
    kind = media.split("/")[0]
    best: tuple[int, float] | None = None
    for pattern, q in ranges:
        if _ALIASES.get(pattern) == media and "/" in pattern:
            specificity = 2
        elif pattern == f"{kind}/*":
            specificity = 1
        elif pattern == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return (best[1], best[0]) if best else (0.0, -1)


@lru_cache(maxsize=256)  # a few Accept headers, asked on every request
def negotiate(accept: str | None, format: str | None = None) -> str | None:
    """The media type to answer with, or None when nothing acceptable (406)."""
    if format:
        # An unencoded "+" in a query string arrives as a space.
        return _ALIASES.get(format.strip().lower().replace(" ", "+"))
    ranges = _ranges(accept or "*/*")
    scored = [(*_quality(m, ranges), _PREFERENCE[m], m) for m in _PREFERENCE]
    q, _, _, media = max(scored)
    return media if q > 0 else None


def _api_version(files: tuple[DistFile, ...]) -> str:
    # PEP 700 makes `size` mandatory in 1.1: claim it only when every size is known.
    return "1.1" if all(f.size is not None for f in files) else "1.0"


def file_path(file: DistFile) -> str:
    """The proxy's own path for a file, relative to the server root."""
    name = file.filename
    return f"files/{file.sha256}/{name if _QUOTED_AS_IS(name) else quote(name)}"


_QUOTED_AS_IS = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch  # what `quote` leaves as it is


_BATCH = 1000  # lines or entries encoded to bytes at once
ENCODER = json.JSONEncoder(separators=(",", ":"))  # ASCII: ensure_ascii
_string = ENCODER.encode  # a str: JSON's quoted, escaped ASCII


def batched(pieces: Iterable[str], separator: str) -> bytes:
    """`separator.join(pieces).encode()`, encoded a batch at a time."""
    return b"".join(_batches(pieces, separator))


def _batches(pieces: Iterable[str], separator: str) -> Iterator[bytes]:
    """`separator.join(pieces).encode()` in parts, encoded a batch at a time."""
    batch: list[str] = []
    between = b""  # the separator, once a batch has gone
    for piece in pieces:
        batch.append(piece)
        if len(batch) == _BATCH:
            yield between
            yield separator.join(batch).encode()
            batch, between = [], separator.encode()
    if batch:
        yield between
        yield separator.join(batch).encode()


def render_page(page: ProjectPage, media: str) -> bytes:
    """A project page; file links are relative to `/simple/<name>/`."""
    return b"".join(_page_parts(page, media))


def _page_parts(page: ProjectPage, media: str) -> Iterator[bytes]:
    """`render_page`, a batch of files at a time."""
    if media == JSON:
        return _page_json(page)
    version = _api_version(page.files)
    status = []
    if page.status:
        status.append(f'    <meta name="pypi:project-status" content="{escape(page.status)}">')
    if page.status and page.status_reason:
        reason = escape(page.status_reason)
        status.append(f'    <meta name="pypi:project-status-reason" content="{reason}">')
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{version}">',
        *status,
        f"    <title>Links for {escape(page.name)}</title>",
        "  </head>",
        "  <body>",
        f"    <!-- sources: {escape(', '.join(page.sources))} -->",
        f"    <h1>Links for {escape(page.name)}</h1>",
    ]
    return _batches(chain(lines, _anchors(page.files), ["  </body>", "</html>", ""]), "\n")


def _anchors(files: Iterable[DistFile]) -> Iterator[str]:
    for file in files:
        attrs = [f'href="../../{file_path(file)}#sha256={file.sha256}"']
        if file.requires_python:
            attrs.append(f'data-requires-python="{escape(file.requires_python)}"')
        if file.yanked is not False:
            reason = file.yanked if isinstance(file.yanked, str) else ""
            attrs.append(f'data-yanked="{escape(reason)}"')
        if file.core_metadata_sha256:
            value = f"sha256={file.core_metadata_sha256}"
            attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
        if file.provenance:
            attrs.append(f'data-provenance="../../{file_path(file)}.provenance"')
        yield f"    <a {' '.join(attrs)}>{escape(file.filename)}</a><br>"


def _page_json(page: ProjectPage) -> Iterator[bytes]:
    given = page.versions
    listed = set(given) if given is not None else file_versions(f.filename for f in page.files)
    versions = sorted(listed - page.held_versions, key=Version)
    meta: dict[str, object] = {"api-version": _api_version(page.files)}
    if page.status:
        said = {"status": page.status}
        meta["project-status"] = said | (
            {"reason": page.status_reason} if page.status_reason else {}
        )
    document = {
        "meta": meta,
        "name": page.name,
        "versions": versions,
        "files": [],
        "_source": ", ".join(page.sources),
    }
    # the document with its files, written one by one where the encoder would write `[]`
    head, files_at, tail = ENCODER.encode(document).partition('"files":[]')
    entries = _batches(map(_entry, page.files), ",")
    return chain([f"{head}{files_at[:-1]}".encode()], entries, [f"]{tail}".encode()])


def _entry(file: DistFile) -> str:
    """A file's entry of a JSON page, written out as JSONEncoder would write its dict (the same
    keys in the same order) at a third of the cost: a big page has 15,000 of them."""
    path = f"../../{file_path(file)}"
    text = (
        f'{{"filename":{_string(file.filename)},"url":{_string(path)},'
        f'"hashes":{{"sha256":{_string(file.sha256)}}}'
    )
    if file.requires_python:
        text += f',"requires-python":{_string(file.requires_python)}'
    if file.yanked is not False:
        text += f',"yanked":{ENCODER.encode(file.yanked)}'  # true, or the reason
    if file.core_metadata_sha256:
        digest = f'{{"sha256":{_string(file.core_metadata_sha256)}}}'
        text += f',"core-metadata":{digest},"dist-info-metadata":{digest}'
    if file.provenance:
        text += f',"provenance":{_string(path + ".provenance")}'
    if file.size is not None:
        text += f',"size":{int(file.size)}'
    if file.upload_time is not None:
        # UTC, to the microsecond, as strftime("%Y-%m-%dT%H:%M:%S.%fZ") writes it (5x faster)
        text += f',"upload-time":"{file.upload_time.isoformat(timespec="microseconds")[:26]}Z"'
    return text + "}"


def render_list(projects: ProjectList, media: str) -> bytes:
    names = sorted(projects.names)
    if media == JSON:
        document = {"meta": {"api-version": "1.0"}, "projects": [{"name": n} for n in names]}
        return json.dumps(document, separators=(",", ":")).encode()
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        '    <meta name="pypi:repository-version" content="1.0">',
        "    <title>Simple index</title>",
        "  </head>",
        "  <body>",
        *(f'    <a href="{quote(n)}/">{escape(n)}</a><br>' for n in names),
        "  </body>",
        "</html>",
        "",
    ]
    return "\n".join(lines).encode()


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page ready to send: its bytes, its media type, its ETag and a gzip copy if worth it.
    Once `compact`, only the gzip copy is kept (a fifth of the bytes: what pip and uv ask for)
    and the plain bytes are decompressed for a client that does not take gzip."""

    plain: bytes | None  # None: only `gzipped` is kept
    media: str
    etag: str
    gzipped: bytes | None

    @property
    def body(self) -> bytes:
        """The plain bytes."""
        if self.plain is not None:
            return self.plain
        assert self.gzipped is not None  # compact() keeps one of the two
        return gzip.decompress(self.gzipped)

    def compact(self) -> "Rendered":
        """This page as worth keeping: its gzip copy alone, when it has one."""
        return replace(self, plain=None) if self.gzipped is not None else self

    @property
    def kept_bytes(self) -> int:
        return len(self.plain or b"") + len(self.gzipped or b"")


_GZIP_FROM = 1024  # bytes: a smaller answer goes out as it is
# zlib's level 3 compresses a page of 15,000 files (7 MB) twice as fast as level 6, to 8% more
# bytes: a page is compressed at each rendering, and rendering is what a big page costs.
GZIP_LEVEL = 3
KEEP_PLAIN = 256 * 2**10  # bytes: a bigger page is kept as its gzip copy alone


def render(answer: ProjectPage | ProjectList, media: str) -> Rendered:
    if isinstance(answer, ProjectPage):
        return _rendered_parts(_page_parts(answer, media), media)
    return rendered(render_list(answer, media), media)


def rendered(body: bytes, media: str) -> Rendered:
    """`body` ready to send as `media` (one of CONTENT_TYPES)."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    gzipped = (
        gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0) if len(body) >= _GZIP_FROM else None
    )
    return Rendered(body, media, etag, gzipped)


def _rendered_parts(parts: Iterable[bytes], media: str) -> Rendered:
    """`rendered` of the body that `parts` make up, hashed and gzipped as they come: beyond
    KEEP_PLAIN the plain bytes are let go (the gzip copy is what is kept)."""
    digest = hashlib.sha256()
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # a gzip member
    plain: list[bytes] | None = []
    gzipped: list[bytes] = []
    size = 0
    for part in parts:
        digest.update(part)
        gzipped.append(compressor.compress(part))
        size += len(part)
        if plain is not None:
            plain.append(part)
            if size > KEEP_PLAIN:
                plain = None
    gzipped.append(compressor.flush())
    etag = f'"{digest.hexdigest()[:32]}"'
    body = b"".join(plain) if plain is not None else None
    if body is not None and size < _GZIP_FROM:
        return Rendered(body, media, etag, None)
    return Rendered(body, media, etag, b"".join(gzipped))
