"""Credentials written into URLs (`https://oauth2:glpat-...@gitlab.example.com`) never leave the
proxy: `mask_userinfo` hides them in any text that is shown (check-config, config errors, error
bodies, the status page), and `MaskUserinfo` applies it to every log record.
"""

import logging
import re

# The userinfo of a URL: after "scheme://", up to the last "@" of the authority (a password may
# hold an unencoded "@"). At the start of a text, also a scheme-less "user:password@host".
_USERINFO = re.compile(r"(?<=://)[^\s/?#]*@|^[^\s/?#@:]*:[^\s/?#]*@")
MASK = "***@"


def mask_userinfo(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***`."""
    return _USERINFO.sub(MASK, text) if "@" in text else text


def _masked(value: object) -> object:
    if isinstance(value, str):
        return mask_userinfo(value)
    if isinstance(value, BaseException):
        return mask_userinfo(str(value))
    return value


class MaskUserinfo(logging.Filter):
    """A handler filter: the message, its string and exception arguments and any traceback,
    masked before a formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_userinfo(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _masked(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_userinfo(logging.Formatter().formatException(record.exc_info))
        return True
