"""`cache verify`, `cache stats` and `cache import`'s report, and a cache directory the proxy
cannot use."""

import fcntl
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

from gitlab_pypi_proxy.offline.bundle import export
from gitlab_pypi_proxy.storage.stores import Stores
from tests.unit.fakes import FakeSource


def _config(tmp_path: Path, directory: Path, max_size: str = "20GiB") -> Path:
    path = tmp_path / f"proxy-{directory.name}.toml"
    path.write_text(f'[cache]\ndirectory = "{directory}"\nmax_size = "{max_size}"\n')
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitlab_pypi_proxy", *args],
        capture_output=True,
        text=True,
        check=False,
    )


async def _fill(directory: Path, count: int) -> list[str]:
    contents = [os.urandom(50_000) for _ in range(count)]
    source = FakeSource("s", contents={hashlib.sha256(c).hexdigest(): c for c in contents})
    store = Stores.local(directory, 2**30)
    for sha in source.contents:
        download = store.downloads.download(
            sha, lambda sha=sha: source.open_file(source.file_for(sha, "x"))
        )
        async for _ in download.follow():
            pass
    store.close()
    return list(source.contents)


async def test_verify_drops_and_reports_a_corrupt_entry(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    good, bad = await _fill(directory, 2)
    store = Stores.local(directory, 2**30)
    cached = store.blobs.open_now(bad)
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
    store = Stores.local(directory, 2**30)
    assert await store.blobs.open(bad) is None
    assert await store.blobs.open(good) is not None


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


def test_import_into_a_cache_too_small_names_what_it_could_not_keep(tmp_path: Path) -> None:
    """Seven 1.5 MiB files into 10 MiB: the first is evicted by the last, and said so."""
    contents = [os.urandom(3 * 2**19) for _ in range(7)]
    files = Stores.local(tmp_path / "big", 2**30)
    for content in contents:
        files.downloads.add(hashlib.sha256(content).hexdigest(), io.BytesIO(content))
    bundle = tmp_path / "b.tar"
    export(files, bundle)
    files.close()
    small = tmp_path / "small"
    config = _config(tmp_path, small, "10MiB")
    result = _cli("cache", "import", str(bundle), "--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"imported 7 files ({7 * 3 * 2**19} bytes), 0 index records"
    first, *rest = sorted(hashlib.sha256(c).hexdigest() for c in contents)  # the bundle's order
    assert lines[1:] == [
        f"not kept: 1 files ({3 * 2**19} bytes): cache.max_size (10485760 bytes) is too small",
        f"  files/{first} ({3 * 2**19} bytes)",
    ]
    kept = Stores.local(small, 10 * 2**20, count_hits=False)
    assert [sha in kept.blobs for sha in (first, *rest)] == [False] + [True] * 6


def test_orphans_are_removed_but_a_running_downloads_files_are_not(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    Stores.local(directory, 2**30).close()
    files = directory / "files"
    running, dead = "a" * 64, "b" * 64
    part, lock = files / "incoming" / f"{running[:16]}x1.part", files / "locks" / running
    part.write_bytes(b"still arriving")
    (files / "incoming" / f"{dead[:16]}x2.part").write_bytes(b"left by a killed worker")
    (files / "locks" / dead).write_bytes(b"")
    # a prefetch running beside holds its digest's lock and its partial file
    held = [os.open(path, os.O_CREAT | os.O_RDWR) for path in (lock, part)]
    for fd in held:
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = _cli("cache", "verify", "--config", str(_config(tmp_path, directory)))
    finally:
        for fd in held:
            os.close(fd)
    assert result.returncode == 0, result.stderr
    assert "removed 1 partial downloads (23 bytes) and 1 lock files" in result.stdout
    assert sorted(p.name for p in (files / "incoming").iterdir()) == [f"{running[:16]}x1.part"]
    assert sorted(p.name for p in (files / "locks").iterdir()) == [running]
