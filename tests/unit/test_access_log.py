"""The access log: one line per request, with the user and the cache outcome, never a credential;
and the JSON formatter, which must format every other record of its logger as well."""

import json
import logging

import pytest

from proxy.http.access_log import AccessLog, JsonFormatter
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
