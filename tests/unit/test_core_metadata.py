"""Core metadata service: advertised only once stored, obtained after a download, memo flushed."""

import asyncio
import hashlib
from pathlib import Path

import httpx

from proxy.cache.files import FileStore
from proxy.cache.metadata import MetadataStore
from proxy.cache.pages import PageCache
from proxy.core_metadata import CoreMetadata
from proxy.sources.compose import Index
from tests.dists import make_wheel
from tests.unit.fakes import FakeSource


async def test_metadata_is_advertised_only_after_it_is_stored(tmp_path: Path) -> None:
    filename, data = make_wheel("demo", "1.0", requires_dist=["dep"])
    sha = hashlib.sha256(data).hexdigest()
    source = FakeSource("platform")
    source.add("demo", filename, sha, data)
    pages = PageCache(tmp_path, 300)
    files = FileStore(tmp_path, 2**30)
    index = Index([source], [], pages)
    async with httpx.AsyncClient() as client:
        service = CoreMetadata(MetadataStore(tmp_path), files, pages, index, client)
        first = await service.annotated(index.project_page("demo"))
        assert first.files[0].core_metadata_sha256 is None
        await asyncio.gather(*service._tasks)  # the background try: not cached, no ranges
        assert (await service.annotated(index.project_page("demo"))).files[
            0
        ].core_metadata_sha256 is None

        generation = pages.generation()
        download = files.download(sha, lambda: source.open_file(source.file_for(sha, filename)))
        service.after_download(download, sha, filename)
        await download.wait()
        await asyncio.gather(*service._tasks)
        assert pages.generation() != generation  # the rendered-page memo is flushed

        page = await service.annotated(index.project_page("demo"))
        body = await service.sidecar(sha, filename, None)
        assert body is not None and b"Requires-Dist: dep" in body
        assert page.files[0].core_metadata_sha256 == hashlib.sha256(body).hexdigest()
        assert await service.sidecar("0" * 64, "other-1.0-py3-none-any.whl", None) is None
