"""The file cache on bad days, end to end: a cache a little too small for a prefetched
set, a corrupted stored file, downloads cut by SIGKILL, and who may read the cache directory."""

import asyncio
import contextlib
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.demo.gitlab_double import GitLabDouble
from gitlab_pypi_proxy.storage.stores import Stores
from tests.e2e.test_prefetch import prefetch
from tests.proxy_process import start_proxy, write_config
from tests.servers import serve
from tests.waiting import wait_until

TOKEN = "glpat-upkeep"
SOURCES = [{"name": "platform", "gitlab_project": 11}]
MIB = 2**20


def _double(*wheels: tuple[str, bytes]) -> GitLabDouble:
    double = GitLabDouble()
    double.add_project(11, "acme/platform")
    double.add_token(TOKEN, read={11})
    for filename, data in wheels:
        name = filename.split("-")[0].replace("_", "-")
        double.add_package_file(11, name, "1.0", filename, data)
    return double


def _url(proxy_url: str, data: bytes, filename: str) -> str:
    return f"{proxy_url}/files/{hashlib.sha256(data).hexdigest()}/{filename}"


def test_prefetch_a_little_past_max_size_keeps_the_set_and_evicts_only_the_oldest(
    tmp_path: Path,
) -> None:
    """The issue's case scaled by ten: a 10 MiB cache holding one 1.5 MiB wheel, six more
    prefetched (it used to report all six `evicted again` and leave the cache empty)."""
    wheels = [make_wheel(f"big-{n}", "1.0", pad_bytes=3 * MIB // 2) for n in range(7)]
    with serve(_double(*wheels).app) as server:
        config = write_config(tmp_path, server.url, SOURCES, token=TOKEN, max_size="10MiB")
        first = prefetch(config, "--package", "big-0")
        assert first.returncode == 0, first.stdout + first.stderr
        result = prefetch(config, *(f"--package=big-{n}" for n in range(1, 7)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetched: 6 (" in result.stdout
    assert result.stdout.rstrip().endswith("offline-complete: yes")
    files = Stores.local(tmp_path / "cache", 10 * MIB, count_hits=False)
    kept = [hashlib.sha256(data).hexdigest() in files.blobs for _, data in wheels]
    assert kept == [False] + [True] * 6  # the least recently used went, nothing else
    assert files.blobs.stats().bytes <= 10 * MIB
    files.close()


def _flip_a_byte(cache: Path, data: bytes, offset: int) -> None:
    files = Stores.local(cache, 2**30, count_hits=False)
    cached = files.blobs.open_now(hashlib.sha256(data).hexdigest())
    assert cached is not None and cached.handle is not None
    path = cached.handle.name
    cached.close()
    files.close()
    with open(path, "r+b") as handle:  # same size, one bit other: only a hash can tell
        handle.seek(offset)
        handle.write(bytes([data[offset] ^ 1]))


def test_a_corrupted_cached_file_is_never_served_as_good(tmp_path: Path) -> None:
    small = make_wheel("small", "1.0")
    big = make_wheel("large", "1.0", pad_bytes=3 * MIB)  # more than one read of the cache
    with serve(_double(small, big).app) as server:
        config = write_config(tmp_path, server.url, SOURCES, token=TOKEN)
        proxy = start_proxy(config)
        try:
            urls = [_url(proxy.url, data, filename) for filename, data in (small, big)]
            for url, (_, data) in zip(urls, (small, big), strict=True):
                response = httpx2.get(url, timeout=30)
                assert response.status_code == 200 and response.content == data
            _flip_a_byte(tmp_path / "cache", small[1], len(small[1]) // 2)
            _flip_a_byte(tmp_path / "cache", big[1], 2 * MIB)

            again = httpx2.get(urls[0], timeout=30)  # checked at lookup: fetched again
            assert again.status_code == 200
            assert again.content == small[1]
            assert again.headers["x-cache"] == "MISS"

            received = bytearray()
            with (
                pytest.raises(httpx2.RemoteProtocolError),  # cut short of its length
                httpx2.stream("GET", urls[1], timeout=30) as response,
            ):
                assert response.headers["x-cache"] == "HIT"
                for chunk in response.iter_bytes():
                    received += chunk
            assert len(received) < len(big[1])
            fetched = httpx2.get(urls[1], timeout=30)
            assert fetched.status_code == 200
            assert fetched.content == big[1]
            assert fetched.headers["x-cache"] == "MISS"
        finally:
            proxy.stop()
    log = proxy.log()
    for _, data in (small, big):
        assert f"cache entry {hashlib.sha256(data).hexdigest()} is corrupt" in log
    assert "Traceback" not in log


def _stalling_files(app: Callable[..., Any], release: threading.Event) -> Callable[..., Any]:
    """The double, but a file body stops halfway until `release` is set."""

    async def stalling(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or "/files/" not in scope["path"]:
            return await app(scope, receive, send)

        async def halfway(message: dict[str, Any]) -> None:
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and len(body) > 1:
                half = len(body) // 2
                await send({"type": "http.response.body", "body": body[:half], "more_body": True})
                await asyncio.to_thread(release.wait)
                message = {**message, "body": body[half:]}
            await send(message)

        await app(scope, receive, halfway)

    return stalling


def test_what_a_killed_download_leaves_is_removed_at_start(tmp_path: Path) -> None:
    filename, data = make_wheel("killed", "1.0", pad_bytes=2 * MIB)
    release = threading.Event()
    files = tmp_path / "cache" / "files"
    with serve(_stalling_files(_double((filename, data)).app, release)) as server:
        config = write_config(tmp_path, server.url, SOURCES, token=TOKEN)
        proxy = start_proxy(config)
        try:
            url = _url(proxy.url, data, filename)

            def fetch() -> None:
                with contextlib.suppress(httpx2.HTTPError):  # the proxy is killed under it
                    httpx2.get(url, timeout=30)

            client = threading.Thread(target=fetch, name="client", daemon=True)
            client.start()
            wait_until(
                lambda: any(p.stat().st_size >= MIB for p in (files / "incoming").iterdir()),
                "half the file written",
            )
            proxy.process.kill()  # SIGKILL: no clean-up of any kind
            proxy.process.wait()
            assert len(list((files / "incoming").iterdir())) == 1
            assert len(list((files / "locks").iterdir())) == 1
            restarted = start_proxy(config)
        finally:
            release.set()
            proxy.stop()
        try:
            assert list((files / "incoming").iterdir()) == []
            assert list((files / "locks").iterdir()) == []
            assert "removed 1 partial downloads (" in restarted.log()
            response = httpx2.get(_url(restarted.url, data, filename), timeout=30)
            assert response.status_code == 200 and response.content == data
        finally:
            restarted.stop()
        client.join(timeout=30)


def test_cache_data_is_its_users_alone(tmp_path: Path) -> None:
    filename, data = make_wheel("private", "1.0")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)  # made before, under a looser umask
    cache.chmod(0o755)
    previous = os.umask(0o022)  # what a service inherits by default
    try:
        with serve(_double((filename, data)).app) as server:
            config = write_config(tmp_path, server.url, SOURCES, token=TOKEN)
            proxy = start_proxy(config, "--workers", "2")
            try:
                assert httpx2.get(f"{proxy.url}/simple/private/").status_code == 200
                response = httpx2.get(_url(proxy.url, data, filename), timeout=30)
                assert response.status_code == 200
            finally:
                proxy.stop()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    opened = [
        (path, stat.S_IMODE(path.stat().st_mode))
        for path in cache.rglob("*")
        if stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    assert opened == []
    assert any(path.name == hashlib.sha256(data).hexdigest() for path in cache.rglob("*"))
