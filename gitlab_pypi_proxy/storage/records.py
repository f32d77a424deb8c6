"""The seam for index records (every source's answers, where files are, which sources delivered
them), by key, each with the time it was fetched: what gitlab_pypi_proxy.index.cached keeps and
gitlab_pypi_proxy.storage.locations and gitlab_pypi_proxy.storage.deliveries build on.

Today's implementations: gitlab_pypi_proxy.storage.pages (diskcache under the cache directory: the
workers of one machine) and gitlab_pypi_proxy.storage.shared_records (the same, with Redis shared by
every replica behind it). Nothing outside gitlab_pypi_proxy.storage and the composition root knows
which one runs."""

from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.writable import CacheWrites


class RecordStore(Protocol):
    writes: CacheWrites  # where a failed local write is reported

    def __len__(self) -> int:
        """How many records (blocking)."""
        ...

    async def get(self, key: Hashable) -> Entry | None: ...

    async def put(self, key: Hashable, entry: Entry) -> None:
        """Never fails: what cannot be stored is held in this process (bounded)."""
        ...

    async def forget(self, *keys: Hashable) -> None:
        """Forget records everywhere they are shared; every worker's renderings are out of
        date."""
        ...

    def get_now(self, key: Hashable) -> Any: ...

    def set_now(self, key: Hashable, value: Any) -> None: ...

    def transact(self) -> AbstractContextManager[Any]: ...

    def items(self) -> Iterator[tuple[Hashable, Any]]: ...

    def keep(self, key: Hashable, entry: Entry) -> bool:
        """Store unless a newer one is stored (blocking: the command line)."""
        ...

    def announce(self) -> None: ...

    def on_forgotten(self, listener: Callable[[list[Hashable]], Awaitable[None]]) -> None:
        """Call `listener` with the keys another worker or replica forgot, once they are
        forgotten here, for what each machine keeps of its own beside the records (a purged
        file's sidecars). Records one machine keeps alone never call it: its workers share one
        cache directory, and the one that forgets drops what it keeps there itself."""
        ...

    def close(self) -> None: ...
