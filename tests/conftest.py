"""Shared test set-up.

The proxy talks to upstreams with httpx2 (pydantic's maintained fork of httpx: its connection
pool does not leak a slot when a request waiting for one is cancelled, encode/httpcore#1093).
respx patches httpx only, but its httpcore mocker works on any pool with httpcore's interface:
pointing it at httpcore2's pools makes `@respx.mock` intercept the proxy's requests. Routes are
still answered with respx's own types (`httpx.Response`, `httpx.Request` in side effects).
"""

import respx.mocks

respx.mocks.HTTPCoreMocker.add_targets(
    "httpcore2._async.connection_pool.AsyncConnectionPool",
    "httpcore2._sync.connection_pool.ConnectionPool",
)
respx.mocks.DEFAULT_MOCKER = "httpcore"
