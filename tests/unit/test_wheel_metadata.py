"""Reading a wheel's METADATA: from a file, and by range reads that never fetch the whole wheel."""

import io
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from zipfile import ZIP_BZIP2, ZIP_DEFLATED, ZIP_LZMA, ZIP_STORED

import httpx
import httpx2
import pytest
import respx

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.index.wheel_metadata import (
    MAX_METADATA,
    NoMetadata,
    RangesUnsupported,
    by_ranges,
    from_file,
)
from tests import zip_bombs

URL = "https://gitlab.internal/files/big_one-1.0-py3-none-any.whl"


def serve_ranges(data: bytes, served: list[int]):
    """A respx side effect that honours one byte range, counting the bytes it sends."""

    def answer(request: httpx.Request) -> httpx.Response:
        spec = request.headers["range"].removeprefix("bytes=")
        first, _, last = spec.partition("-")
        if not first:
            start, end = max(0, len(data) - int(last)), len(data) - 1
        else:
            start, end = int(first), min(int(last), len(data) - 1)
        served.append(end - start + 1)
        return httpx.Response(
            206,
            content=data[start : end + 1],
            headers={"content-range": f"bytes {start}-{end}/{len(data)}"},
        )

    return answer


def reader(client: httpx2.AsyncClient):
    async def read(spec: str) -> tuple[bytes, str | None]:
        response = await client.get(URL, headers={"Range": spec})
        if response.status_code != 206:
            return b"", None
        return response.content, response.headers.get("content-range")

    return read


def test_from_file_reads_the_dist_info_member() -> None:
    filename, data = make_wheel("demo", "1.0", requires_dist=["dep>=2"])
    metadata = from_file(io.BytesIO(data), filename)
    assert b"Name: demo" in metadata
    assert b"Requires-Dist: dep>=2" in metadata


def test_from_file_refuses_a_non_zip() -> None:
    with pytest.raises(NoMetadata):
        from_file(io.BytesIO(b"not a zip at all"), "demo-1.0-py3-none-any.whl")


@respx.mock
async def test_range_reads_fetch_a_sliver_of_a_large_wheel(client) -> None:
    filename, data = make_wheel("big-one", "1.0", pad_bytes=8 * 2**20)
    served: list[int] = []
    respx.get(URL).mock(side_effect=serve_ranges(data, served))
    metadata = await by_ranges(reader(client), filename)
    assert metadata == from_file(io.BytesIO(data), filename)
    assert sum(served) < 256 * 2**10 < len(data)


@respx.mock
async def test_a_wheel_s_central_directory_is_parsed_once_however_many_ranges_it_takes(
    client, monkeypatch
) -> None:
    # METADATA first, then a megabyte, then a directory of 3,000 entries (larger than the tail
    # read): the directory takes a second read and the member a third
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("many-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: many\n")
        archive.writestr("many/padding.bin", b"\0" * 2**20)
        for number in range(3000):
            archive.writestr(f"many/data/entry_{number:05}.json", "{}")
    data = buffer.getvalue()
    served: list[int] = []
    respx.get(URL).mock(side_effect=serve_ranges(data, served))
    parsed: list[int] = []

    class Counted(zipfile.ZipFile):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            parsed.append(len(self.infolist()))

    monkeypatch.setattr(zipfile, "ZipFile", Counted)
    metadata = await by_ranges(reader(client), "many-1.0-py3-none-any.whl")
    assert metadata.startswith(b"Metadata-Version: 2.1")
    assert len(served) == 3
    assert parsed == [3002]


@respx.mock
async def test_an_upstream_ignoring_ranges_is_reported(client) -> None:
    filename, data = make_wheel("demo", "1.0")
    respx.get(URL).respond(200, content=data)
    with pytest.raises(RangesUnsupported):
        await by_ranges(reader(client), filename)


@respx.mock
async def test_a_wheel_without_metadata_is_reported(client) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("demo/__init__.py", "")
    served: list[int] = []
    respx.get(URL).mock(side_effect=serve_ranges(buffer.getvalue(), served))
    with pytest.raises(NoMetadata):
        await by_ranges(reader(client), "demo-1.0-py3-none-any.whl")


def _peak(work: Callable[[], object]) -> int:
    """The most memory Python held at once while `work` ran, in bytes above what it held before."""
    tracemalloc.start()
    try:
        work()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("method", [ZIP_BZIP2, ZIP_DEFLATED], ids=["bz2", "deflate"])
def test_a_metadata_bomb_is_refused_in_constant_memory(method: int) -> None:
    filename, data = zip_bombs.bomb("bomb", "1.0", method)

    def read() -> None:
        with pytest.raises(NoMetadata):
            from_file(io.BytesIO(data), filename)

    assert _peak(read) < 4 * 2**20 < zip_bombs.BOMB


@respx.mock
@pytest.mark.parametrize("method", [ZIP_BZIP2, ZIP_DEFLATED], ids=["bz2", "deflate"])
async def test_a_metadata_bomb_read_by_ranges_is_refused_in_constant_memory(
    client, method: int
) -> None:
    filename, data = zip_bombs.bomb("bomb", "1.0", method)
    respx.get(URL).mock(side_effect=serve_ranges(data, []))
    tracemalloc.start()
    try:
        with pytest.raises(NoMetadata):
            await by_ranges(reader(client), filename)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_a_bomb_declaring_a_large_size_stops_at_the_cap() -> None:
    compressed = zip_bombs.deflate_zeros(zip_bombs.BOMB)
    declared = zip_bombs.wheel("bomb", "1.0", compressed, ZIP_DEFLATED, MAX_METADATA)
    too_large = zip_bombs.wheel("bomb", "1.0", compressed, ZIP_DEFLATED, MAX_METADATA + 1)

    def read(wheel: tuple[str, bytes]) -> None:
        with pytest.raises(NoMetadata):
            from_file(io.BytesIO(wheel[1]), wheel[0])

    assert _peak(lambda: read(declared)) < 3 * MAX_METADATA
    assert _peak(lambda: read(too_large)) < 2**20


def _metadata_member(metadata: bytes, method: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("demo-1.0.dist-info/METADATA", metadata, compress_type=method)
        archive.writestr("demo/__init__.py", b"x = 1\n" * 100, compress_type=method)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "method",
    [ZIP_STORED, ZIP_DEFLATED, ZIP_BZIP2, ZIP_LZMA],
    ids=["stored", "deflate", "bz2", "lzma"],
)
def test_every_compression_a_wheel_may_use_is_read(method: int) -> None:
    metadata = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n" + b"long text\n" * 5000
    data = _metadata_member(metadata, method)
    assert from_file(io.BytesIO(data), "demo-1.0-py3-none-any.whl") == metadata


def test_metadata_that_fails_its_crc_or_is_short_is_refused() -> None:
    metadata = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n"
    deflated = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    compressed = deflated.compress(metadata) + deflated.flush()
    crc = zlib.crc32(metadata)
    good = zip_bombs.wheel("demo", "1.0", compressed, ZIP_DEFLATED, len(metadata), crc)
    assert from_file(io.BytesIO(good[1]), good[0]) == metadata
    for declared, checksum in [(len(metadata), crc ^ 1), (len(metadata) + 1, crc)]:
        name, data = zip_bombs.wheel("demo", "1.0", compressed, ZIP_DEFLATED, declared, checksum)
        with pytest.raises(NoMetadata):
            from_file(io.BytesIO(data), name)


def test_an_lzma_member_declaring_a_huge_dictionary_is_read_with_a_small_one() -> None:
    metadata = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n\n"
    data = bytearray(_metadata_member(metadata, ZIP_LZMA))
    # the member's LZMA properties follow its local header (30 bytes + name) and 4 bytes
    at = 30 + len("demo-1.0.dist-info/METADATA") + 4
    data[at + 1 : at + 5] = (0xFFFFFFFF).to_bytes(4, "little")
    assert _peak(lambda: from_file(io.BytesIO(bytes(data)), "demo-1.0-py3-none-any.whl")) < 2**20
