"""The logging set-up of every process of `serve`: text for people, JSON lines for machines.

Log lines carry text from upstreams and clients (file names, reasons, publishers): both formats
write its control characters escaped (gitlab_pypi_proxy.printable), so one record is one line,
and a text record's traceback has every line indented: a line at the margin is always a
record's. The supervisor applies it too, so this module imports no more than logging needs
(no asyncio, no metrics): the supervisor stays small."""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from gitlab_pypi_proxy.printable import escaped

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# gitlab_pypi_proxy.http.access_log's line: the JSON format writes its arguments as fields
ACCESS_LINE = '%s %s "%s %s" %d %d %.2fms cache=%s'
_FIELDS = ("client", "user", "method", "path", "status", "bytes", "duration_ms", "cache")


class TextFormatter(logging.Formatter):
    """The text format: the record on one line, its traceback (if any) indented below it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escaped(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(stack_info)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_text:  # formatted by an earlier filter (redact): indented here
            record.exc_text = _indented(record.exc_text)
        return super().format(record)


def _indented(text: str) -> str:
    lines = text.splitlines()
    if all(line.startswith("    ") for line in lines):
        return text  # indented already (a record formatted twice)
    return "\n".join("    " + escaped(line) for line in lines)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access lines carry their fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(
                record, "request_id", "-"
            ),  # gitlab_pypi_proxy.request_id's filter
            "message": escaped(record.getMessage()),
        }
        if record.msg == ACCESS_LINE and isinstance(record.args, tuple):  # an access line, no other
            line.update(
                (key, escaped(value) if isinstance(value, str) else value)
                for key, value in zip(_FIELDS, record.args, strict=True)
            )
            line["duration_ms"] = round(line["duration_ms"], 2)
        if record.exc_info:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A logging.config.dictConfig for the supervisor and every worker process."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"class": f"{__name__}.TextFormatter", "format": _TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {
            "userinfo": {"()": "gitlab_pypi_proxy.redact.MaskUserinfo"},
            "request_id": {"()": "gitlab_pypi_proxy.request_id.RequestIdFilter"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["userinfo", "request_id"],  # no URL credentials; the request's id
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
            "httpx2": {"level": "WARNING"},  # one line per upstream call is noise
        },
    }
