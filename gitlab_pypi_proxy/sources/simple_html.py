"""Parse a PEP 503 HTML page (GitLab's or any index's) into file records: every field checked
(gitlab_pypi_proxy.sources.page_fields), a malformed link left out and counted."""

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

from gitlab_pypi_proxy.names import InvalidName, is_sha256, validate, validate_filename
from gitlab_pypi_proxy.printable import one_line
from gitlab_pypi_proxy.sources.page_fields import (
    MAX_FILENAME,
    MAX_SPECIFIER,
    MAX_URL,
    BadEntry,
    Dropped,
    optional_text,
    reason,
    text,
)


@dataclass(frozen=True, slots=True)
class Link:
    filename: str
    url: str  # absolute, without fragment
    sha256: str | None
    requires_python: str | None
    yanked: str | bool
    core_metadata_sha256: str | None
    provenance: str | None = None  # PEP 740 `data-provenance`: absolute URL


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    """PEP 792 project status as a page says it (`pypi:project-status`, JSON `project-status`)."""

    status: str | None = None
    reason: str | None = None


_CHUNK = 2**20  # bytes decoded to text at a time


def status_of(status: object, said_reason: object) -> ProjectStatus:
    """A status the PEP names (others are kept as said, lower case); a reason of one line."""
    said = one_line(status, 32)
    if said is None:
        return ProjectStatus()
    return ProjectStatus(said.lower(), reason(said_reason))


def checked_link(
    *,
    filename: object,
    url: object,
    sha256: str | None,
    requires_python: object,
    yanked: object,
    core_metadata_sha256: str | None,
    provenance: object,
) -> Link:
    """A Link of fields a page gave, each of the type and text the model holds; raises BadEntry
    for an entry no client could use safely. A yank reason is made one line; a provenance URL
    that is no URL is left out (the file is listed without it)."""
    name = text(filename, "filename", MAX_FILENAME)
    try:
        validate_filename(name)
    except InvalidName as exc:
        raise BadEntry(str(exc)) from None
    if isinstance(yanked, str):
        yanked = reason(yanked) or True
    elif not isinstance(yanked, bool):
        raise BadEntry(f"yanked of {name} is {type(yanked).__name__}")
    try:
        provenance = optional_text(provenance, "provenance", MAX_URL)
    except BadEntry:
        provenance = None
    return Link(
        filename=name,
        url=text(url, f"url of {name}", MAX_URL),
        sha256=sha256,
        requires_python=optional_text(requires_python, f"requires-python of {name}", MAX_SPECIFIER),
        yanked=yanked,
        core_metadata_sha256=core_metadata_sha256,
        provenance=provenance,
    )


def _hash_from(value: str | None) -> str | None:
    """'sha256=<hex>' → hex; anything else (true, other algorithms) → None."""
    if value and value.startswith("sha256="):
        digest = value[7:].lower()
        return digest if is_sha256(digest) else None
    return None


def decoded(body: bytes, encoding: str | None = None) -> Iterator[str]:
    """A page's bytes as text, a MiB at a time (what cannot be decoded replaced): one C call
    over a page of tens of MiB holds the GIL, and the whole text would be one more copy."""
    try:
        decoder = codecs.getincrementaldecoder(encoding or "utf-8")(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    view = memoryview(body)
    for at in range(0, len(body), _CHUNK):
        yield decoder.decode(view[at : at + _CHUNK])
    yield decoder.decode(b"", final=True)


class _Anchors(HTMLParser):
    """The attributes of every <a> tag, in order: all a project page says is in them. The
    standard library's tokenizer (the one BeautifulSoup's html.parser builder uses), without
    building a tree: a page of 10,000 files parses in a fifth of the time, and no worker loads
    BeautifulSoup (8 MiB each). Also the text of each, for a root index's names (`texts`).
    Fed a piece at a time, the anchors found so far are taken from `anchors` between pieces."""

    def __init__(self, texts: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str] = {}
        self.texts: list[str] = []
        self._texts = texts
        self._text: list[str] | None = None  # inside an <a>: its text so far

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close_anchor()
            self.anchors.append(dict(attrs))
            self._text = [] if self._texts else None
        elif tag == "meta":
            found = dict(attrs)
            if found.get("name") and found.get("content") is not None:
                self.meta.setdefault(str(found["name"]).lower(), str(found["content"]))

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close_anchor()

    def close(self) -> None:
        super().close()
        self._close_anchor()

    def _close_anchor(self) -> None:
        if self._text is not None:
            self.texts.append("".join(self._text))
            self._text = None


def parse_project_page(
    html: str | Iterable[str], page_url: str, dropped: Dropped | None = None
) -> list[Link]:
    """Every file link of a project page. Tolerates <br> or not, extra attributes, whitespace.
    The links left out as malformed are counted in `dropped`."""
    return parse_project_document(html, page_url, dropped)[0]


def parse_project_document(
    html: str | Iterable[str], page_url: str, dropped: Dropped | None = None
) -> tuple[list[Link], ProjectStatus]:
    """A project page's file links and its PEP 792 status, from its text or its text's pieces
    (`decoded`)."""
    dropped = dropped if dropped is not None else Dropped()
    parser = _Anchors()
    links: list[Link] = []
    for piece in [html] if isinstance(html, str) else html:
        parser.feed(piece)
        _take_links(parser, page_url, links, dropped)
    parser.close()
    _take_links(parser, page_url, links, dropped)
    status = status_of(
        parser.meta.get("pypi:project-status"), parser.meta.get("pypi:project-status-reason")
    )
    return links, status


def _take_links(parser: _Anchors, page_url: str, links: list[Link], dropped: Dropped) -> None:
    """The links of the anchors the parser has found so far, added to `links`."""
    anchors, parser.anchors = parser.anchors, []
    for anchor in anchors:
        href = anchor.get("href")
        if href is None:
            continue
        url = urljoin(page_url, href.strip())
        parts = urlsplit(url)
        filename = unquote(parts.path.rsplit("/", 1)[-1])
        if not filename:
            continue
        fragment = parts.fragment
        sha256 = _hash_from(fragment) if fragment else None
        requires_python = anchor.get("data-requires-python")
        # an attribute without a value (`data-yanked`) is there, and empty
        yanked = (anchor["data-yanked"] or True) if "data-yanked" in anchor else False
        metadata = anchor.get("data-core-metadata") or anchor.get("data-dist-info-metadata")
        provenance = anchor.get("data-provenance")
        try:
            link = checked_link(
                filename=filename,
                url=parts._replace(fragment="").geturl(),
                sha256=sha256,
                requires_python=requires_python,
                yanked=yanked,
                core_metadata_sha256=_hash_from(metadata) if metadata else None,
                provenance=urljoin(url, provenance.strip()) if provenance else None,
            )
        except BadEntry as exc:
            dropped.add(str(exc))
            continue
        links.append(link)


def project_names(said: Iterable[object]) -> frozenset[str]:
    """The normalized forms of the names a root index gives that are project names at all."""
    names = set()
    for name in said:
        if isinstance(name, str) and name.strip():
            try:
                names.add(validate(name.strip()))
            except InvalidName:
                continue
    return frozenset(names)


def parse_project_names(html: str | Iterable[str]) -> frozenset[str]:
    """The normalized names of a root index (GitLab repeats a name once per version)."""
    parser = _Anchors(texts=True)
    for piece in [html] if isinstance(html, str) else html:
        parser.feed(piece)
        parser.anchors.clear()
    parser.close()
    return project_names(parser.texts)
