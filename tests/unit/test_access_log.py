"""The access log: one line per request, with the user and the cache outcome, never a credential;
and the JSON formatter, which must format every other record of its logger as well."""

import json
import logging

import pytest

from gitlab_pypi_proxy.http.access_log import AccessLog
from gitlab_pypi_proxy.log_format import JsonFormatter
from tests.unit.asgi import asgi_client, echo_app


async def test_access_log_line_has_user_cache_and_no_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with asgi_client(AccessLog(echo_app), "127.0.0.1") as client:
        await client.get("/files/abc/x.whl?token=querysecret", auth=("bob", "hunter2-secret"))
    (record,) = [r for r in caplog.records if r.name == "proxy.access"]
    line = JsonFormatter().format(record)
    fields = json.loads(line)
    assert fields["user"] == "alice" and fields["cache"] == "HIT" and fields["status"] == 200
    assert fields["method"] == "GET" and fields["path"] == "/files/abc/x.whl"
    assert fields["bytes"] > 0
    assert "hunter2" not in line and "querysecret" not in line and "Basic" not in line


def test_another_record_of_the_access_logger_is_formatted_too() -> None:
    """The read check once logged on `proxy.access` too, and the JSON formatter, taking its
    record for an access line, failed on it (KeyError: 'duration_ms')."""
    record = logging.LogRecord(
        "proxy.access",
        logging.DEBUG,
        __file__,
        1,
        "cannot check %s for a restricted reader: %s",
        ("x-1.0.tar.gz", "upstream platform unavailable"),
        None,
    )
    fields = json.loads(JsonFormatter().format(record))
    assert fields["message"] == (
        "cannot check x-1.0.tar.gz for a restricted reader: upstream platform unavailable"
    )
    assert fields["logger"] == "proxy.access" and "duration_ms" not in fields
