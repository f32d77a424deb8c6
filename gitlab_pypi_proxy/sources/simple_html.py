"""Parse a PEP 503 HTML page (GitLab's or any index's) into file records."""

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

from gitlab_pypi_proxy.names import is_sha256, normalize


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
class Status:
    """PEP 792 project status as a page says it (`pypi:project-status`, JSON `project-status`)."""

    status: str | None = None
    reason: str | None = None


STATUSES = ("active", "archived", "quarantined", "deprecated")


def status_of(status: object, reason: object) -> Status:
    """A status the PEP names (others are kept as said, lower case); a reason of one line."""
    if not isinstance(status, str) or not status.strip():
        return Status()
    text = reason if isinstance(reason, str) and reason.strip() else None
    return Status(status.strip().lower()[:32], " ".join(text.split())[:300] if text else None)


def _hash_from(value: str | None) -> str | None:
    """'sha256=<hex>' → hex; anything else (true, other algorithms) → None."""
    if value and value.startswith("sha256="):
        digest = value[7:].lower()
        return digest if is_sha256(digest) else None
    return None


class _Anchors(HTMLParser):
    """The attributes of every <a> tag, in order: all a project page says is in them. The
    standard library's tokenizer (the one BeautifulSoup's html.parser builder uses), without
    building a tree: a page of 10,000 files parses in a fifth of the time, and no worker loads
    BeautifulSoup (8 MiB each). Also the text of each, for a root index's names."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str] = {}
        self.texts: list[str] = []
        self._text: list[str] | None = None  # inside an <a>: its text so far

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close_anchor()
            self.anchors.append(dict(attrs))
            self._text = []
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


def parse_project_page(html: str, page_url: str) -> list[Link]:
    """Every file link of a project page. Tolerates <br> or not, extra attributes, whitespace."""
    return parse_project_document(html, page_url)[0]


def parse_project_document(html: str, page_url: str) -> tuple[list[Link], Status]:
    """A project page's file links and its PEP 792 status."""
    parser = _Anchors()
    parser.feed(html)
    parser.close()
    status = status_of(
        parser.meta.get("pypi:project-status"), parser.meta.get("pypi:project-status-reason")
    )
    links = []
    for anchor in parser.anchors:
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
        links.append(
            Link(
                filename=filename,
                url=parts._replace(fragment="").geturl(),
                sha256=sha256,
                requires_python=requires_python.strip() or None if requires_python else None,
                yanked=yanked,
                core_metadata_sha256=_hash_from(metadata) if metadata else None,
                provenance=urljoin(url, provenance.strip()) if provenance else None,
            )
        )
    return links, status


def parse_project_names(html: str) -> frozenset[str]:
    """The normalized names of a root index (GitLab repeats a name once per version)."""
    parser = _Anchors()
    parser.feed(html)
    parser.close()
    return frozenset(normalize(text) for raw in parser.texts if (text := raw.strip()))
