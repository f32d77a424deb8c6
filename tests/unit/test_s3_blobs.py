"""The S3 blob store against a real S3-compatible server (SeaweedFS): puts that never overwrite
(small in one PUT, large staged and copied), reads whole, ranged and seekable, a corrupt object
found on the way out, listing for the cache commands, presigned URLs, and a store that is down."""

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx2
import obstore
import pytest

from gitlab_pypi_proxy.config import StorageConfig
from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.storage import s3_blobs
from gitlab_pypi_proxy.storage.cached_file import CorruptEntry
from gitlab_pypi_proxy.storage.s3_blobs import S3BlobStore
from tests.backing_services import S3Server, running_seaweedfs, s3_server  # noqa: F401


def storage_of(server: S3Server, prefix: str = "files/", **more: object) -> StorageConfig:
    return StorageConfig(
        backend="s3",
        endpoint_url=server.endpoint_url,
        bucket=server.bucket,
        prefix=prefix,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        **more,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def shared_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One server for the tests that do not stop it, each under a prefix of its own."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path, shared_s3: S3Server) -> Iterator[S3BlobStore]:
    blobs = S3BlobStore(storage_of(shared_s3, prefix=f"{tmp_path.name}/"), tmp_path / "cache")
    yield blobs
    blobs.close()


def listed(server: S3Server, prefix: str) -> list[str]:
    return [m["path"] for batch in obstore.list(server.store(), prefix=prefix) for m in batch]


def put(store: S3BlobStore, data: bytes) -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    spool = store.spool(sha256)
    try:
        spool.handle.write(data)
        spool.written = len(data)
        assert store.put(spool)
    finally:
        store.discard(spool)
    return sha256


async def read(store: S3BlobStore, sha256: str, start: int = 0, end: int | None = None) -> bytes:
    blob = await store.open(sha256)
    assert blob is not None
    last = blob.size - 1 if end is None else end
    return b"".join([chunk async for chunk in blob.chunks(start, last)])


@pytest.mark.parametrize("size", [1000, s3_blobs.SMALL_PUT + 3 * 2**20], ids=["small", "staged"])
async def test_put_then_read_whole_ranged_and_seekable(
    store: S3BlobStore, shared_s3: S3Server, size: int
) -> None:
    data = os.urandom(size)
    sha256 = put(store, data)
    assert await read(store, sha256) == data
    assert await read(store, sha256, 10, 99) == data[10:100]
    blob = store.open_now(sha256)
    assert blob is not None and blob.size == size
    reader = blob.reader()
    reader.seek(size - 5)
    assert reader.read() == data[-5:]
    # nothing staged is left, and no spool on local disk
    assert listed(shared_s3, store.key("")) == [store.key(sha256)]
    assert not list((store._tmp).iterdir())


def test_a_second_put_never_overwrites(store: S3BlobStore, shared_s3: S3Server) -> None:
    data = b"the verified bytes"
    sha256 = put(store, data)
    before = obstore.head(shared_s3.store(), store.key(sha256))
    assert put(store, data) == sha256  # another replica's put of the same bytes: success
    after = obstore.head(shared_s3.store(), store.key(sha256))
    assert after["last_modified"] == before["last_modified"]


async def test_a_corrupt_object_is_deleted_never_served_whole(
    store: S3BlobStore, shared_s3: S3Server
) -> None:
    big = os.urandom(3 * 2**20)
    small = b"small file"
    for data in (big, small):
        sha256 = hashlib.sha256(data).hexdigest()
        obstore.put(shared_s3.store(), store.key(sha256), data[:-1] + b"!")  # damaged
    small_sha = hashlib.sha256(small).hexdigest()
    assert await store.open(small_sha) is None  # checked at lookup: a miss, and deleted
    big_sha = hashlib.sha256(big).hexdigest()
    blob = await store.open(big_sha)
    assert blob is not None
    sent = b""
    with pytest.raises(CorruptEntry):
        async for chunk in blob.chunks(0, blob.size - 1):
            sent += chunk
    assert len(sent) < len(big)  # the last piece was held back
    assert small_sha not in store and big_sha not in store


def test_wheels_metadata_reads_through_the_seekable_reader(store: S3BlobStore) -> None:
    _, wheel = make_wheel("acme-utils", "1.0", pad_bytes=2 * 2**20)
    blob = store.open_now(put(store, wheel))
    assert blob is not None
    with zipfile.ZipFile(blob.reader()) as archive:
        assert "acme_utils-1.0.dist-info/METADATA" in archive.namelist()


def test_digests_and_stats_list_the_bucket(store: S3BlobStore, shared_s3: S3Server) -> None:
    digests = {put(store, os.urandom(100 + n)) for n in range(3)}
    obstore.put(shared_s3.store(), store.key("incoming/leftover"), b"x")  # not a blob
    obstore.put(shared_s3.store(), "elsewhere/" + "a" * 64, b"x")  # not under the prefix
    assert set(store.digests()) == digests
    stats = store.stats()
    assert stats.entries == 3 and stats.bytes == 100 + 101 + 102
    entries = {e.sha256: e for e in store.entries()}  # the operator API's /-/projects
    assert set(entries) == digests and {e.size for e in entries.values()} == {100, 101, 102}
    assert all(e.used > 0 for e in entries.values())  # when stored: a bucket keeps no access time
    store.delete(next(iter(digests)))
    assert len(set(store.digests())) == 2


async def test_a_presigned_url_serves_the_object_and_holds_no_secret(
    tmp_path: Path, shared_s3: S3Server
) -> None:
    store = S3BlobStore(storage_of(shared_s3, "signed/", redirect=True), tmp_path / "cache")
    data = os.urandom(5000)
    sha256 = put(store, data)
    url = await store.redirect_url(sha256)
    assert url is not None and shared_s3.secret_access_key not in url
    assert httpx2.get(url).content == data
    assert await store.redirect_url("0" * 64) is None  # not held: the proxy answers


async def test_a_store_that_is_down_is_a_miss_and_stops_keeping(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811 (its own server: stopped here)
) -> None:
    store = S3BlobStore(storage_of(s3_server), tmp_path / "cache")
    sha256 = put(store, b"kept before the outage")
    s3_server.stop()
    assert await store.open(sha256) is None  # the upstream serves it, unkept
    assert not store.keeping
    reachable, reason = store.reachable()
    assert not reachable and reason and s3_server.secret_access_key not in reason
    problem = store.problem()
    assert problem is not None and problem[0] is False and "cannot be reached" in problem[1]


def test_a_missing_bucket_is_a_plain_fatal_problem(tmp_path: Path, shared_s3: S3Server) -> None:
    storage = storage_of(shared_s3)
    missing = S3BlobStore(
        StorageConfig(**{**storage.__dict__, "bucket": "no-such-bucket"}), tmp_path / "c"
    )
    problem = missing.problem()
    assert problem is not None
    fatal, message = problem
    assert fatal and "'no-such-bucket'" in message and "does not exist" in message
    assert io.StringIO(message).read().count("\n") == 0
