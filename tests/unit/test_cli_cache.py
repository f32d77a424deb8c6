"""`cache verify` and `cache stats`, and a cache directory the proxy cannot use."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from proxy.cache.files import FileStore
from tests.unit.fakes import FakeSource


def _config(tmp_path: Path, directory: Path) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(f'[cache]\ndirectory = "{directory}"\n')
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, check=False
    )


async def _fill(directory: Path, count: int) -> list[str]:
    contents = [os.urandom(50_000) for _ in range(count)]
    source = FakeSource("s", contents={hashlib.sha256(c).hexdigest(): c for c in contents})
    store = FileStore(directory, 2**30)
    for sha in source.contents:
        download = store.download(sha, lambda sha=sha: source.open_file(source.file_for(sha, "x")))
        async for _ in download.follow():
            pass
    store.close()
    return list(source.contents)


async def test_verify_drops_and_reports_a_corrupt_entry(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    good, bad = await _fill(directory, 2)
    store = FileStore(directory, 2**30)
    cached = store.read(bad)
    assert cached is not None and cached.handle is not None
    path = cached.handle.name
    cached.close()
    store.close()
    with open(path, "r+b") as handle:  # same size, other bytes: only a rehash finds it
        handle.write(b"tampered")
    result = _cli("cache", "verify", "--config", str(_config(tmp_path, directory)))
    assert result.returncode == 1
    assert f"corrupt, dropped: {bad}" in result.stdout
    assert "verified 2 files, dropped 1" in result.stdout
    store = FileStore(directory, 2**30)
    assert await store.open(bad) is None
    assert await store.open(good) is not None


async def test_stats(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    await _fill(directory, 3)
    result = _cli("cache", "stats", "--config", str(_config(tmp_path, directory)))
    assert result.returncode == 0
    assert "files: 3 entries" in result.stdout


def test_cache_directory_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "file"
    directory.write_text("not a directory")
    result = _cli("serve", "--config", str(_config(tmp_path, directory)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "cache.directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_cache_database_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    (directory / "pages").mkdir(parents=True)
    (directory / "pages" / "cache.db").write_bytes(b"this is not sqlite" * 100)
    result = _cli("serve", "--config", str(_config(tmp_path, directory)))
    assert result.returncode == 2
    assert "cannot open the cache" in result.stderr
    assert "Traceback" not in result.stderr
