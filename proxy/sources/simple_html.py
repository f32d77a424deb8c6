"""Parse a PEP 503 HTML page (GitLab's or any index's) into file records."""

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

from proxy.names import is_sha256, normalize


@dataclass(frozen=True, slots=True)
class Link:
    filename: str
    url: str  # absolute, without fragment
    sha256: str | None
    requires_python: str | None
    yanked: str | bool
    core_metadata_sha256: str | None


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
        self.texts: list[str] = []
        self._text: list[str] | None = None  # inside an <a>: its text so far

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close_anchor()
            self.anchors.append(dict(attrs))
            self._text = []

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
    parser = _Anchors()
    parser.feed(html)
    parser.close()
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
        links.append(
            Link(
                filename=filename,
                url=parts._replace(fragment="").geturl(),
                sha256=sha256,
                requires_python=requires_python.strip() or None if requires_python else None,
                yanked=yanked,
                core_metadata_sha256=_hash_from(metadata) if metadata else None,
            )
        )
    return links


def parse_project_names(html: str) -> frozenset[str]:
    """The normalized names of a root index (GitLab repeats a name once per version)."""
    parser = _Anchors()
    parser.feed(html)
    parser.close()
    return frozenset(normalize(text) for raw in parser.texts if (text := raw.strip()))
