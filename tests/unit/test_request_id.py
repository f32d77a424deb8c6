"""Request ids: which client ids are taken as they are, the middleware's header and context, and
the log formats that show the id."""

import asyncio
import json
import logging
import os
from typing import Any

import httpx2
import pytest

from gitlab_pypi_proxy.http.access_log import AccessLog
from gitlab_pypi_proxy.log_format import JsonFormatter, logging_config
from gitlab_pypi_proxy.request_id import MAX_LENGTH, REQUEST_ID, RequestIdFilter, accepted, made
from gitlab_pypi_proxy.sources.upstream_pool import WatchedTransport
from tests.unit.test_upstream_pool import TIMEOUT, NeverAnswers, Pools
from tests.waiting import async_wait_until

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "value",
    [
        UUID,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "a",
        "x" * MAX_LENGTH,
        "build-42/job:7+retry=1@ci",
    ],
)
def test_printable_bounded_ids_are_taken_as_they_are(value: str) -> None:
    assert accepted(value.encode()) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"x" * (MAX_LENGTH + 1),
        b"two words",
        b'quote"d',
        b"back\\slash",
        b"line\nbreak",
        b"tab\tbed",
        b"nul\x00",
        "caf\u00e9".encode(),
        b"\x7f",
    ],
)
def test_other_ids_are_refused(value: bytes | None) -> None:
    assert accepted(value) is None


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request id it sees, and a stale x-request-id header of its own."""
    body = json.dumps({"seen": REQUEST_ID.get()}).encode()
    headers = [(b"x-request-id", b"from-the-app"), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _client() -> httpx2.AsyncClient:
    transport = httpx2.ASGITransport(app=AccessLog(_app))
    return httpx2.AsyncClient(transport=transport, base_url="http://proxy.internal")


async def test_a_clients_id_round_trips_and_is_the_context_of_the_request() -> None:
    async with _client() as client:
        response = await client.get("/simple/", headers={"X-Request-ID": UUID})
    assert response.headers.get_list("x-request-id") == [UUID]
    assert response.json() == {"seen": UUID}
    assert REQUEST_ID.get() == "-"  # reset once the request is answered


@pytest.mark.parametrize("sent", [None, "has space", "y" * (MAX_LENGTH + 1)])
async def test_a_missing_or_bad_id_is_replaced_by_a_new_one(sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    async with _client() as client:
        first = await client.get("/", headers=headers)
        second = await client.get("/", headers=headers)
    made = first.headers.get_list("x-request-id")
    assert len(made) == 1 and made[0] != sent and accepted(made[0].encode()) == made[0]
    assert first.json() == {"seen": made[0]}
    assert second.headers["x-request-id"] != made[0]  # one per request


async def test_the_id_stays_for_the_servers_traceback_line_when_the_app_raises() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    scope = {"type": "http", "headers": [(b"x-request-id", b"req-7")]}

    async def one_request() -> str:  # as uvicorn runs each request: a task of its own
        try:
            await AccessLog(broken)(scope, None, None)
        except RuntimeError:
            return REQUEST_ID.get()  # where uvicorn logs "Exception in ASGI application"
        return "no exception"

    assert await asyncio.create_task(one_request()) == "req-7"
    assert REQUEST_ID.get() == "-"  # the task's context, not the caller's


def _formatted(log_format: str, request_id: str | None) -> str:
    """One record as `serve`'s logging configuration formats it, inside a request or not."""
    config = logging_config("info", log_format)
    formatter_config = config["formatters"]["default"]
    formatter = (
        JsonFormatter()
        if "()" in formatter_config
        else logging.Formatter(formatter_config["format"])
    )
    assert "request_id" in config["handlers"]["stderr"]["filters"]
    assert config["filters"]["request_id"]["()"] == "gitlab_pypi_proxy.request_id.RequestIdFilter"
    record = logging.LogRecord(
        "proxy.upload", logging.INFO, __file__, 1, "uploaded %s", ("x",), None
    )
    token = REQUEST_ID.set(request_id) if request_id else None
    try:
        assert RequestIdFilter().filter(record)
    finally:
        if token:
            REQUEST_ID.reset(token)
    return formatter.format(record)


def test_text_and_json_lines_carry_the_id() -> None:
    assert " proxy.upload [req-42]: uploaded x" in _formatted("text", "req-42")
    assert " proxy.upload [-]: uploaded x" in _formatted("text", None)
    line = json.loads(_formatted("json", "req-42"))
    assert line["request_id"] == "req-42" and line["message"] == "uploaded x"
    assert json.loads(_formatted("json", None))["request_id"] == "-"


async def test_the_pool_watchdog_a_request_starts_names_no_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The upstream pool's watchdog starts with the first upstream request and then watches for
    every request to come: its lines must not carry the first one's id."""
    caplog.set_level(logging.INFO, logger="proxy.upstream")
    caplog.handler.addFilter(RequestIdFilter())  # as serve's handler: the id at emit time
    wedged = NeverAnswers()
    transport = WatchedTransport(Pools(wedged), TIMEOUT)
    async with httpx2.AsyncClient(transport=transport) as client:

        async def first_request() -> None:
            REQUEST_ID.set("req-first")
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(client.get("https://gitlab.example/x"), 10)

        stuck = asyncio.create_task(first_request())
        await async_wait_until(lambda: transport.stalled, "the watchdog to notice the stall")
        stuck.cancel()
        await async_wait_until(lambda: wedged.closed, "the wedged pool to close")
    stalls = [r for r in caplog.records if ") stalled:" in r.getMessage()]
    assert [getattr(r, "request_id", None) for r in stalls] == ["-"]


def test_made_ids_are_distinct_hex_and_a_forked_child_draws_its_own_prefix() -> None:
    ids = [made() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and accepted(i.encode()) == i for i in ids)
    assert all(int(i, 16) >= 0 for i in ids[:10])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then out without pytest's teardown
        os.write(write, made().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert len(child) == 32 and child[:16] != ids[0][:16]  # not this process's prefix
