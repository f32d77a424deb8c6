"""Reading a wheel's METADATA: from a file, and by range reads that never fetch the whole wheel."""

import io
import zipfile

import httpx
import httpx2
import pytest
import respx

from gitlab_pypi_proxy.demo.dists import make_wheel
from gitlab_pypi_proxy.index.wheel_metadata import (
    NoMetadata,
    RangesUnsupported,
    by_ranges,
    from_file,
)

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
