"""`/metrics`: every worker's metrics (gitlab_pypi_proxy.metrics), and the file cache's size and
whether its directory takes writes, read at scrape time."""

import asyncio
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from gitlab_pypi_proxy.metrics import PREFIX, registry
from gitlab_pypi_proxy.storage.writable import writes_for


class CacheSizeCollector(Collector):
    """The file cache's entries and bytes, read from its index at scrape time, and whether the
    cache directory takes writes."""

    def __init__(self, entries: int, volume: int, writable: bool) -> None:
        self.entries, self.volume, self.writable = entries, volume, writable

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            PREFIX + "file_cache_entries", "Files in the cache", value=self.entries
        )
        yield GaugeMetricFamily(
            PREFIX + "file_cache_bytes", "Bytes of files on disk", value=self.volume
        )
        yield GaugeMetricFamily(
            PREFIX + "cache_writable",
            "1 while the cache directory takes writes; 0 when full or read-only (files are "
            "then served without being kept)",
            value=int(self.writable),
        )


def _scrape(entries: int, volume: int, writable: bool) -> bytes:
    sizes = CollectorRegistry()
    sizes.register(CacheSizeCollector(entries, volume, writable))
    return generate_latest(registry()) + generate_latest(sizes)


async def metrics_endpoint(request: Request) -> Response:
    services = request.app.state.services
    files = await asyncio.to_thread(services.stores.blobs.stats)
    state = await asyncio.to_thread(writes_for(services.config.cache.directory).state)
    body = await asyncio.to_thread(_scrape, files.entries, files.bytes, state.writable)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
