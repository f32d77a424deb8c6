"""gitlab_pypi_proxy.policy.audit_trail: the audit trail (several processes, rotation, bad days)
and its query."""

import hashlib
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gitlab_pypi_proxy.policy.audit_trail import (
    AuditEntry,
    AuditTrail,
    identity_label,
    parse_package,
    query,
)
from tests.mounts import tmpfs
from tests.waiting import wait_until

TOKEN = "glpat-SecretToken1234567890"
SHA = "ab" * 32


def _entry(filename: str = "requests-2.32.0-py3-none-any.whl", **fields) -> AuditEntry:
    values = {
        "event": "download",
        "identity": "ci-bot",
        "client": "10.1.2.3",
        "sha256": SHA,
        "source": "public",
        "cache": "hit",
    }
    return AuditEntry(filename=filename, **(values | fields))


def _lines(directory: Path) -> list[dict]:
    found = []
    for path in sorted(directory.glob("audit.jsonl*")):
        if not path.name.endswith(".lock"):
            found.extend(json.loads(line) for line in path.read_bytes().splitlines())
    return found


def test_identities_never_hold_the_token() -> None:
    assert identity_label("alice") == "alice"
    assert identity_label("bad name\n\x00") == "badname"
    assert identity_label(None) == "anonymous"
    label = identity_label(None, TOKEN)
    assert label == "gitlab:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert TOKEN not in label and "SecretToken" not in label
    assert identity_label(None, TOKEN) == label  # the same token, the same builds
    assert identity_label(None, TOKEN + "x") != label
    assert identity_label("alice", TOKEN) == "alice"  # a proxy user is named as such


def test_each_entry_is_one_json_line_and_the_query_finds_who_received_what(
    tmp_path: Path,
) -> None:
    trail = AuditTrail(tmp_path / "audit.jsonl", max_size=2**20, keep=2)
    trail.start()
    when = datetime(2025, 6, 10, 12, 0, 0, 123456, tzinfo=UTC)
    trail.record(_entry(time=when, advisories=("GHSA-aaaa",), notes=("yanked",)))
    trail.record(_entry("requests-2.31.0.tar.gz", identity=identity_label(None, TOKEN)))
    trail.record(_entry("Flask-3.0.0-py3-none-any.whl", sha256="cd" * 32, identity="anonymous"))
    trail.record(
        _entry("acme_tools-1.0-py3-none-any.whl", event="upload", cache="-", source="private")
    )
    trail.close()
    lines = _lines(tmp_path)
    assert len(lines) == 4
    assert lines[0] == {
        "time": "2025-06-10T12:00:00.123Z",
        "event": "download",
        "identity": "ci-bot",
        "client": "10.1.2.3",
        "file": "requests-2.32.0-py3-none-any.whl",
        "project": "requests",
        "version": "2.32.0",
        "sha256": SHA,
        "source": "public",
        "cache": "hit",
        "advisories": ["GHSA-aaaa"],
        "notes": ["yanked"],
    }
    assert TOKEN not in (tmp_path / "audit.jsonl").read_text()

    found = query(tmp_path / "audit.jsonl", package="Requests")
    assert [d.file for d in found.deliveries] == [
        "requests-2.32.0-py3-none-any.whl",
        "requests-2.31.0.tar.gz",
    ]
    pinned = query(tmp_path / "audit.jsonl", package="requests", version="2.32")
    assert [d.identity for d in pinned.deliveries] == ["ci-bot"]  # 2.32 == 2.32.0
    assert "GHSA-aaaa" in pinned.deliveries[0].describe()
    by_digest = query(tmp_path / "audit.jsonl", sha256=("CD" * 32))
    assert [d.project for d in by_digest.deliveries] == ["flask"]
    uploads = query(tmp_path / "audit.jsonl", package="acme-tools")
    assert [(d.event, d.source) for d in uploads.deliveries] == [("upload", "private")]
    assert query(tmp_path / "audit.jsonl", package="numpy").deliveries == []


def test_record_never_waits_for_a_stalled_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail = AuditTrail(tmp_path / "audit.jsonl", max_size=2**20, keep=2, queue_size=5)
    entered, release = threading.Event(), threading.Event()
    append = trail._append

    def stalled(lines: list[bytes]) -> None:
        entered.set()
        release.wait(30)  # a disk that stops answering
        append(lines)

    monkeypatch.setattr(trail, "_append", stalled)
    trail.start()
    trail.record(_entry())
    wait_until(entered.is_set, "the writer stalls on its first line")
    for _ in range(10):
        trail.record(_entry())  # returns at once: 5 queued, 5 dropped
    assert trail.stats.dropped == 5
    release.set()
    trail.close()
    assert len(_lines(tmp_path)) == 6
    assert trail.stats.written == 6


def test_rotation_keeps_keep_files_each_near_max_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path, max_size=2**16, keep=2)
    trail.start()
    for i in range(1500):  # about 400 KB: several rotations
        trail.record(_entry(client=f"10.0.{i // 256}.{i % 256}"))
    trail.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.lock"]
    line = len(_entry().line())
    for name in ("audit.jsonl.1", "audit.jsonl.2"):
        assert 2**16 <= (tmp_path / name).stat().st_size < 2**16 + 2 * line
    kept = query(path, package="requests").deliveries
    assert len(kept) == len(_lines(tmp_path)) < 1500  # the oldest went with the third rotation
    assert kept[-1].client == "10.0.5.219"  # the last one written is there


_WRITER = """
import sys, time
from pathlib import Path
from gitlab_pypi_proxy.policy.audit_trail import AuditEntry, AuditTrail
directory, writer, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
trail = AuditTrail(directory / "audit.jsonl", max_size=2**16, keep=500)
trail.start()
(directory / f"ready-{writer}").touch()
deadline = time.monotonic() + 60
while not (directory / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.01)
for i in range(count):
    trail.record(AuditEntry(event="download", identity=f"writer-{writer}", client=str(i),
                            filename="requests-2.32.0-py3-none-any.whl", sha256="ab" * 32,
                            source="public", cache="miss", notes=("x" * (i % 50),)))
trail.close(timeout=60)
print(trail.stats.written, trail.stats.failed, trail.stats.dropped)
"""


def test_several_processes_append_and_rotate_one_trail_without_losing_a_line(
    tmp_path: Path,
) -> None:
    writers, count = 4, 1500
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(w), str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    try:
        wait_until(
            lambda: all((tmp_path / f"ready-{w}").exists() for w in range(writers)),
            "every writer opened the trail",
            seconds=60,
        )
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=90)[0].split() for p in processes]
    finally:
        for p in processes:
            p.kill()
            p.wait()
    assert all(out == [str(count), "0", "0"] for out in outputs), outputs
    rotated = [p for p in tmp_path.glob("audit.jsonl.*") if p.suffix != ".lock"]
    assert len(rotated) > 5  # rotated many times, concurrently
    # Only a full file was rotated, once, and nobody wrote on into it afterwards: at most one
    # line per writer that saw it not yet full.
    longest = max(len(line) for p in rotated for line in p.read_bytes().splitlines(True))
    for path in rotated:
        assert 2**16 <= path.stat().st_size <= 2**16 + writers * longest, path.name
    lines = _lines(tmp_path)  # every line parses: none split or joined
    seen = sorted((line["identity"], int(line["client"])) for line in lines)
    expected = sorted((f"writer-{w}", i) for w in range(writers) for i in range(count))
    assert seen == expected  # every line once: none lost, none twice
    assert len(query(tmp_path / "audit.jsonl", package="requests").deliveries) == writers * count


def test_a_full_disk_costs_lines_counted_never_the_writer(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "64k") as directory:
        trail = AuditTrail(directory / "audit.jsonl", max_size=2**20, keep=1)
        trail.start()
        for i in range(600):  # about 160 KB into 64 KB
            trail.record(_entry(client=str(i)))
        wait_until(lambda: trail.stats.written + trail.stats.failed == 600, "all were tried")
        assert trail.stats.failed > 0
        assert trail.stats.written > 0
        (directory / "audit.jsonl").unlink()  # room again: the writer goes on with a new file
        trail.record(_entry(client="after"))
        wait_until(lambda: trail.stats.written + trail.stats.failed == 601, "one more tried")
        trail.close()
        result = query(directory / "audit.jsonl")
        assert [d.client for d in result.deliveries] == ["after"]


def test_the_query_skips_lines_that_are_not_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    good = _entry().line()
    path.write_bytes(good + b'{"time": "cut sho\n' + b"[1, 2]\n" + b'{"time": "x"}\n' + good)
    result = query(path)
    assert len(result.deliveries) == 2
    assert result.unreadable_lines == 3
    assert len(query(path, package="requests").deliveries) == 2


def test_package_arguments() -> None:
    assert parse_package("Requests") == ("requests", None)
    assert parse_package("Django_REST==3.0") == ("django-rest", "3.0")
    with pytest.raises(ValueError, match="not a version"):
        parse_package("requests==two")
    with pytest.raises(ValueError, match="not a valid project name"):
        parse_package("../etc")
