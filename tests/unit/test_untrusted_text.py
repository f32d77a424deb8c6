"""Text the proxy did not write, on its way into a header or a log line
(gitlab_pypi_proxy.printable, and `serve`'s log formats): never a second line, never a header
the server cannot send."""

import json
import logging
import logging.config
import sys

import pytest

from gitlab_pypi_proxy.log_format import logging_config
from gitlab_pypi_proxy.printable import MAX_HEADER, escaped, header_value, one_line

HOSTILE = "GitHub evil/repo\r\nX-Injected: 1\x00 caf\u00e9 \u2028next\x85 \U0001f600"


def test_escaped_text_is_one_line_that_says_what_was_there() -> None:
    assert escaped("plain text, é and all") == "plain text, é and all"
    assert escaped(HOSTILE) == (
        "GitHub evil/repo\\r\\nX-Injected: 1\\x00 café \\u2028next\\x85 \U0001f600"
    )


def test_a_header_value_is_printable_ascii_and_bounded() -> None:
    value = header_value(HOSTILE)
    assert value == "GitHub evil/repo\\r\\nX-Injected: 1\\x00 caf\\xe9 \\u2028next\\x85 \\U0001f600"
    value.encode("ascii")
    assert len(header_value("x" * 5000)) == MAX_HEADER


def test_one_line_collapses_and_bounds() -> None:
    assert one_line(HOSTILE, 300) == "GitHub evil/repo X-Injected: 1 café next \U0001f600"
    assert one_line("\r\n\x00", 300) is None
    assert one_line({"a": 1}, 300) is None
    assert len(one_line("y" * 5000, 300) or "") == 300


def _format(log_format: str, record: logging.LogRecord) -> str:
    """`record` as `serve`'s logging configuration formats it."""
    config = logging_config("info", log_format)
    configurator = logging.config.DictConfigurator(config)
    formatter = configurator.configure_formatter(config["formatters"]["default"])
    record.request_id = "-"
    return formatter.format(record)


def _record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord(
        "proxy.provenance",
        logging.INFO,
        __file__,
        1,
        message,
        args,
        exc_info,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_log_line_escapes_what_upstream_text_holds(log_format: str) -> None:
    line = _format(log_format, _record("provenance of %s: %s", "demo.whl", HOSTILE))
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert "\u2028" not in line and "\x85" not in line
    if log_format == "json":
        line = json.loads(line)["message"]
    assert "GitHub evil/repo\\r\\nX-Injected: 1\\x00" in line


def test_a_text_records_traceback_is_indented_so_no_line_forges_a_record() -> None:
    try:
        raise ValueError("bad\n2030-01-01 00:00:00,000 INFO proxy.access [-]: forged")
    except ValueError:
        exc_info = sys.exc_info()
    first, *rest = _format("text", _record("failed", exc_info=exc_info)).split("\n")
    assert first.endswith("INFO proxy.provenance [-]: failed")
    assert rest and all(line.startswith("    ") for line in rest)
    json_line = _format("json", _record("failed", exc_info=exc_info))
    assert "forged" in json.loads(json_line)["exception"]
