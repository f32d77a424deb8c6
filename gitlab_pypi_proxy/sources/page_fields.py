"""What an upstream page may put into the model: each field checked for its type, size and text.

An index is untrusted input (anyone can publish on the public index, a mirror can be broken),
and everything past `sources/` trusts the model: a renderer writes `requires_python` into HTML,
a header or a log line carries a yank reason. So a field is taken only as the type the model
says, and text only as printable text within a bound. An entry that cannot be described so is
dropped (`BadEntry`, counted in `Dropped` for the page's one log line: a page of a million bad
entries must not write a million lines); a document that is not the shape its kind promises is
`Malformed`, which its source reports as its own failure (a 502 naming it), never a 500.
"""

import json
import logging
from dataclasses import dataclass

from gitlab_pypi_proxy.printable import one_line

MAX_FILENAME = 255
MAX_URL = 8192
MAX_SPECIFIER = 1024  # requires-python: the longest real ones are a few dozen characters
MAX_REASON = 300  # a yank or project status reason, as one line


def reason(value: object) -> str | None:
    """A yank or project status reason: one line of at most MAX_REASON characters, or None."""
    return one_line(value, MAX_REASON)


class Malformed(ValueError):
    """A document that is not what its kind says; the message is one line."""


class BadEntry(ValueError):
    """One entry of a page that the model cannot hold; the message is one line."""


def text(value: object, what: str, limit: int) -> str:
    """A field that must be printable text (a file name, a URL, a specifier) of at most `limit`
    characters, as it is; raises BadEntry saying which rule it breaks."""
    if not isinstance(value, str):
        raise BadEntry(f"{what} is {type(value).__name__}, not text")
    if len(value) > limit:
        raise BadEntry(f"{what} is longer than {limit} characters")
    if not value.isprintable():
        raise BadEntry(f"{what} holds control characters")
    return value


def optional_text(value: object, what: str, limit: int) -> str | None:
    """`text`, or None for a field that is absent (None) or empty."""
    if value is None:
        return None
    return text(value, what, limit).strip() or None


def not_a_number(constant: str) -> object:
    """json's `parse_constant`: NaN and Infinity are no JSON (RFC 8259)."""
    raise Malformed(f"{constant} is not JSON")


def load_json(body: bytes | str) -> object:
    """A JSON document as Python objects; raises Malformed (one line) for anything that is not
    RFC 8259 JSON in UTF-8: NaN and Infinity, or nesting deeper than Python can recurse."""
    try:
        return json.loads(body, parse_constant=not_a_number)
    except RecursionError:
        raise Malformed("JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise Malformed("JSON that is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Malformed(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


@dataclass
class Dropped:
    """The entries of one page left out as malformed: how many, and why the first one was."""

    count: int = 0
    first: str = ""

    def add(self, reason: str) -> None:
        if not self.count:
            self.first = reason
        self.count += 1

    def report(self, log: logging.Logger, source: str, page: str) -> None:
        """One warning line for the page, if anything was dropped."""
        if self.count:
            log.warning(
                "source %s: %s: %d malformed entries left out (the first: %s)",
                source,
                page,
                self.count,
                self.first,
            )
