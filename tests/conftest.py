"""Shared test set-up: the fixtures several test modules use, and respx pointed at httpx2.

The proxy talks to upstreams with httpx2 (pydantic's maintained fork of httpx: its connection
pool does not leak a slot when a request waiting for one is cancelled, encode/httpcore#1093).
respx patches httpx only, but its httpcore mocker works on any pool with httpcore's interface:
pointing it at httpcore2's pools makes `@respx.mock` intercept the proxy's requests. Routes are
still answered with respx's own types (`httpx.Response`, `httpx.Request` in side effects).
"""

from collections.abc import AsyncIterator

import httpx2
import pytest
import respx.mocks

respx.mocks.HTTPCoreMocker.add_targets(
    "httpcore2._async.connection_pool.AsyncConnectionPool",
    "httpcore2._sync.connection_pool.ConnectionPool",
)
respx.mocks.DEFAULT_MOCKER = "httpcore"


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client for a source under test (respx answers its requests under @respx.mock)."""
    async with httpx2.AsyncClient(timeout=2) as client:
        yield client
