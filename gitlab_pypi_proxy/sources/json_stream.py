"""An upstream's JSON document decoded a piece at a time: the members of its top-level object,
and the elements of an array member one at a time.

`json.loads` decodes a whole document in one call that holds the GIL throughout: for a page of
tens of MiB, a second or more in which no other thread runs, the event loop's included, however
the parsing thread was started. Decoded element by element (the standard decoder's `raw_decode`
for each), the parsing thread gives way between elements, and no element's dicts outlive its
turn. Each piece is held to what `load_json` holds a whole document to: UTF-8, no NaN or
Infinity, nesting no deeper than Python recurses; any breach raises Malformed (one line).
"""

import codecs
import json
import re
from collections.abc import Iterator

from gitlab_pypi_proxy.sources.page_fields import Malformed, not_a_number

_CHUNK = 2**20  # bytes decoded to text at a time
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(parse_constant=not_a_number)


def utf8_text(body: bytes) -> str:
    """`body` as text, decoded a MiB at a time (a UTF-8 BOM dropped); Malformed if it is not
    UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    view = memoryview(body)
    try:
        parts = [decoder.decode(view[at : at + _CHUNK]) for at in range(0, len(body), _CHUNK)]
        parts.append(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        raise Malformed("JSON that is not UTF-8") from None
    return "".join(parts)


class JsonScanner:
    """A cursor over one JSON document: `members` walks its top-level object, and for each
    member the caller takes the value whole (`value`) or element by element (`elements`), or
    passes it by (`skip`); `end` checks nothing follows the document."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def _space(self) -> str:
        self.at = _SPACE.match(self.text, self.at).end()  # type: ignore[union-attr]
        return self.text[self.at : self.at + 1]

    def _expect(self, char: str) -> None:
        if self._space() != char:
            found = repr(self.text[self.at]) if self.at < len(self.text) else "the end"
            raise Malformed(f"not JSON (expected {char!r} at character {self.at}, found {found})")
        self.at += 1

    def next_is(self, char: str) -> bool:
        return self._space() == char

    def value(self) -> object:
        """The value at the cursor, decoded whole."""
        self._space()
        try:
            value, self.at = _DECODER.raw_decode(self.text, self.at)
        except RecursionError:
            raise Malformed("JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise Malformed(f"not JSON ({exc.msg} at character {exc.pos})") from None
        return value

    def elements(self) -> Iterator[object]:
        """The elements of the array at the cursor, each decoded when it is reached."""
        self._expect("[")
        if self.next_is("]"):
            self.at += 1
            return
        while True:
            yield self.value()
            if self.next_is("]"):
                self.at += 1
                return
            self._expect(",")

    def skip(self) -> None:
        """Pass the value at the cursor by (an array element by element)."""
        if self.next_is("["):
            for _ in self.elements():
                pass
        else:
            self.value()

    def members(self) -> Iterator[str]:
        """The keys of the object at the cursor, in order; after each, the caller takes or
        skips its value before asking for the next."""
        self._expect("{")
        if self.next_is("}"):
            self.at += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise Malformed(f"not JSON (an object key at character {self.at} is no string)")
            self._expect(":")
            yield key
            if self.next_is("}"):
                self.at += 1
                return
            self._expect(",")

    def end(self) -> None:
        if self._space():
            raise Malformed(f"not JSON (extra data at character {self.at})")
