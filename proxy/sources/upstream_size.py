"""The size of a file an upstream offers, without downloading it: what a HEAD on an uncached file
answers with.

The size a page listed comes first (no request at all); then the upstream's own HEAD; where that
gives no size (object storage signs its redirect for GET only, so a HEAD there is refused), a
one-byte ranged GET, whose Content-Range carries the size.
"""

import logging
from collections.abc import Sequence

import httpx2

from proxy.errors import FileNotFoundUpstream, SourceUnavailable, Unavailable
from proxy.index.compose import Index
from proxy.model import DistFile
from proxy.sources.upstream import Upstream

log = logging.getLogger("proxy.upstream_size")


def _total(response: httpx2.Response) -> int | None:
    if response.status_code == 206:  # "bytes 0-0/12345"
        total = response.headers.get("content-range", "").rpartition("/")[2]
    else:
        total = response.headers.get("content-length", "")
    return int(total) if total.isascii() and total.isdigit() else None


async def _ask(upstream: Upstream, index: Index, file: DistFile) -> int | None:
    source = index.by_name[file.source]
    auth = source.auth_for(file.url)
    try:
        async with upstream.stream(source.name, file.url, auth=auth, method="HEAD") as response:
            size = _total(response)
    except FileNotFoundUpstream:
        size = None  # not there, or a HEAD refused on the way: the ranged GET tells which
    if size is not None:
        return size
    async with upstream.stream(
        source.name, file.url, auth=auth, headers={"Range": "bytes=0-0"}
    ) as response:
        return _total(response)  # closed unread if the whole file is coming


async def upstream_size(
    upstream: Upstream, index: Index, candidates: Sequence[DistFile]
) -> int | None:
    """The size of the file from the first candidate that has it (None if it does not say).

    Raises FileNotFoundUpstream when none has it, Unavailable when one that might could not be
    reached.
    """
    listed = next((f.size for f in candidates if f.size is not None), None)
    if listed is not None:
        return listed
    failures: list[SourceUnavailable] = []
    for file in candidates:
        try:
            return await _ask(upstream, index, file)
        except FileNotFoundUpstream:
            continue
        except SourceUnavailable as exc:
            failures.append(exc)
    if failures:
        raise Unavailable(failures)
    raise FileNotFoundUpstream("no source has this file")
