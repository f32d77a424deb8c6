"""Text the proxy did not write (an upstream's, a client's) on its way out: as one line of a
page, in an HTTP header, in a log line.

Such text may hold CR/LF (a second header, a forged log line), NUL, other control characters,
characters outside Latin-1 (which an HTTP header cannot carry: the server fails the answer), or
thousands of characters. Each place it goes has one function here:
- `one_line`: a reason shown to people (a yank, a project status): whitespace and unprintable
  characters become single spaces, bounded; None when nothing is left.
- `escaped`: a log line: every unprintable character written as its Python escape (`\\n`,
  `\\x00`, `\\u2028`), so one record is one line and nothing in it reads as another.
- `header_value`: `escaped`, then every non-ASCII character escaped too, bounded.
"""

MAX_HEADER = 1024  # what any client reads in one header line, with room to spare

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(value: object, limit: int) -> str | None:
    """Free text as one line of at most `limit` characters; None when it is no text or blank."""
    if not isinstance(value, str):
        return None
    if not value.isprintable():
        value = "".join(c if c.isprintable() else " " for c in value)
    return " ".join(value.split())[:limit] or None


def _escape(char: str) -> str:
    code = ord(char)
    if char in _ESCAPES:
        return _ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escaped(text: str) -> str:
    """`text` with every character Python does not print written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def header_value(text: str, limit: int = MAX_HEADER) -> str:
    """`text` as a header value: printable ASCII only, at most `limit` characters."""
    safe = escaped(text)
    if not safe.isascii():
        safe = "".join(c if c.isascii() else _escape(c) for c in safe)
    return safe[:limit]
