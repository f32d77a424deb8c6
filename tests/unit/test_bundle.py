"""Cache bundles: a round trip keeps files and index records; hostile bundles are refused."""

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gitlab_pypi_proxy.model import DistFile, ProjectPage
from gitlab_pypi_proxy.offline.bundle import BundleError, export, import_bundle
from gitlab_pypi_proxy.storage.deliveries import delivery_key
from gitlab_pypi_proxy.storage.pages import Entry, PageStore
from gitlab_pypi_proxy.storage.stores import Stores


def _caches(directory: Path) -> tuple[PageStore, Stores]:
    stores = Stores.local(directory, 2**30, count_hits=False)
    return stores.pages, stores


def _file(data: bytes, filename: str) -> DistFile:
    sha = hashlib.sha256(data).hexdigest()
    upload = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    return DistFile(filename, sha, "platform", f"https://g/{sha}", ">=3.8", False, 3, upload)


def test_round_trip_keeps_files_pages_lists_and_locations(tmp_path: Path) -> None:
    pages, files = _caches(tmp_path / "one")
    wheel, sdist = b"wheel bytes", b"sdist bytes"
    listed = (_file(wheel, "a-1.0-py3-none-any.whl"), _file(sdist, "a-1.0.tar.gz"))
    for data, file in zip((wheel, sdist), listed, strict=True):
        files.downloads.add(file.sha256, io.BytesIO(data))
    page = ProjectPage("a", listed, ("platform",))
    pages.keep(("page", "platform", "a"), Entry(page, 1000.0))
    pages.keep(("page", "tools", "a"), Entry(None, 1001.0))  # "not here" is an answer too
    pages.keep(("names", "platform"), Entry(frozenset({"a"}), 1002.0))
    files.locations.remember_now(listed)
    bundle = tmp_path / "b.tar"
    assert export(files, bundle) == (2, 5)
    with tarfile.open(bundle) as tar:
        names = {m.name for m in tar}
    assert names == {
        "bundle.json",
        "index.jsonl",
        f"files/{listed[0].sha256}/a-1.0-py3-none-any.whl",
        f"files/{listed[1].sha256}/a-1.0.tar.gz",
    }

    pages2, files2 = _caches(tmp_path / "two")
    report = import_bundle(files2, bundle)
    assert (report.files, report.bytes, report.pages, report.bad) == (2, 22, 3, [])
    assert dict(pages2.items()) == dict(pages.items())
    cached = files2.blobs.open_now(listed[0].sha256)
    assert cached is not None and cached.handle.read() == wheel
    cached.close()


def test_a_round_trip_keeps_which_sources_delivered_each_file(tmp_path: Path) -> None:
    data = b"wheel bytes"
    sha = hashlib.sha256(data).hexdigest()
    _, files = _caches(tmp_path / "one")
    files.downloads.add(sha, io.BytesIO(data))
    files.deliveries.add_now(sha, ["platform", "mirror"])
    bundle = tmp_path / "b.tar"
    export(files, bundle)
    pages2, files2 = _caches(tmp_path / "two")
    files2.deliveries.add_now(sha, ["tools"])  # what the importing cache knew stays
    report = import_bundle(files2, bundle)
    assert (report.files, report.bad) == (1, [])
    assert pages2.get_now(delivery_key(sha)).value == {"platform", "mirror", "tools"}


def test_an_older_page_in_the_bundle_does_not_replace_a_newer_one(tmp_path: Path) -> None:
    pages, files = _caches(tmp_path / "one")
    pages.keep(("names", "platform"), Entry(frozenset({"old"}), 1000.0))
    bundle = tmp_path / "b.tar"
    export(files, bundle)
    pages2, files2 = _caches(tmp_path / "two")
    pages2.keep(("names", "platform"), Entry(frozenset({"new"}), 2000.0))
    assert import_bundle(files2, bundle).pages == 0
    assert dict(pages2.items())[("names", "platform")].value == frozenset({"new"})


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_hostile_members_and_records_are_reported_and_skipped(tmp_path: Path) -> None:
    good = b"good bytes"
    sha = hashlib.sha256(good).hexdigest()
    bad_record = {"kind": "page", "source": "s", "name": "../etc", "fetched_at": 1, "files": []}
    bundle = tmp_path / "b.tar"
    _tar(
        bundle,
        {
            "bundle.json": json.dumps(
                {"format": "gitlab-pypi-proxy-bundle", "version": 1}
            ).encode(),
            "index.jsonl": json.dumps(bad_record).encode() + b"\nnot json\n",
            "../escape": b"x",
            "files/not-a-digest/x.whl": b"x",
            f"files/{sha}/x-1.0.tar.gz": good,
        },
    )
    pages, files = _caches(tmp_path / "c")
    report = import_bundle(files, bundle)
    assert report.files == 1 and report.pages == 0
    assert [line.split(":")[0] for line in report.bad] == [
        "index.jsonl line 1",
        "index.jsonl line 2",
        "../escape",
        "files/not-a-digest/x.whl",
    ]
    assert not (tmp_path / "escape").exists()
    assert list(pages.items()) == []
    assert sha in files.blobs


@pytest.mark.parametrize(
    "members",
    [
        {},
        {"other.txt": b"x"},
        {"bundle.json": b'{"format": "something else"}'},
        {"bundle.json": b"[not json"},
    ],
    ids=["empty", "no-header", "wrong-format", "bad-header"],
)
def test_a_tar_that_is_not_a_bundle_is_refused(tmp_path: Path, members: dict) -> None:
    bundle = tmp_path / "b.tar"
    _tar(bundle, members)
    _, files = _caches(tmp_path / "c")
    with pytest.raises(BundleError, match="not a gitlab-pypi-proxy bundle"):
        import_bundle(files, bundle)


def test_a_file_that_is_not_a_tar_is_a_bundle_error(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(b"definitely not a tar archive" * 40)
    _, files = _caches(tmp_path / "c")
    with pytest.raises(BundleError, match="cannot read"):
        import_bundle(files, bundle)


def test_an_export_that_cannot_be_written_leaves_nothing_behind(tmp_path: Path) -> None:
    _, files = _caches(tmp_path / "c")
    target = tmp_path / "no-such-directory" / "b.tar"
    with pytest.raises(BundleError, match="cannot write"):
        export(files, target)
    assert not target.parent.exists()
