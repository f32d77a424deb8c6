"""The seam for index records (every source's answers, which sources delivered which files), by
key, each with the time it was fetched: what gitlab_pypi_proxy.index.cached keeps and
gitlab_pypi_proxy.storage.deliveries builds on.

Today's implementations: gitlab_pypi_proxy.storage.pages (diskcache under the cache directory: the
workers of one machine) and gitlab_pypi_proxy.storage.shared_records (the same, with Redis shared by
every replica behind it). Nothing outside gitlab_pypi_proxy.storage and the composition root knows
which one runs."""

from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, Protocol

from gitlab_pypi_proxy.storage.pages import Entry
from gitlab_pypi_proxy.storage.writable import CacheWrites


class RecordStore(Protocol):
    """Keys are text, numbers or tuples of them; values what the record format keeps
    (gitlab_pypi_proxy.storage.record_format; another value raises TypeError: a mistake, not a
    bad day). A stored record that cannot be decoded is dropped and read as none. A shared
    store's failures (Redis) never raise: the machine's records serve alone."""

    writes: CacheWrites  # where a failed local write is reported

    def __len__(self) -> int:
        """How many records (blocking). Raises OSError or sqlite3.Error when the cache
        directory cannot be read."""
        ...

    async def get(self, key: Hashable) -> Entry | None:
        """The record of `key`, or None. Raises OSError or sqlite3.Error when the cache
        directory cannot be read."""
        ...

    async def has(self, key: Hashable) -> bool:
        """Whether a record of `key` is stored, fresh or not, without reading it. Raises as
        `get`."""
        ...

    async def put(self, key: Hashable, entry: Entry) -> None:
        """Never fails: what cannot be stored is held in this process (bounded)."""
        ...

    async def forget(self, *keys: Hashable) -> None:
        """Forget records everywhere they are shared; every worker's renderings are out of
        date. Never fails: what the disk will not drop is forgotten in this process."""
        ...

    def get_now(self, key: Hashable) -> Any:
        """`get` (blocking), of an Entry or of a value stored bare by `set_now`."""
        ...

    def set_now(self, key: Hashable, value: Any) -> None:
        """Store `value` bare, without a time (blocking). Raises OSError, sqlite3.Error or
        diskcache.Timeout (gitlab_pypi_proxy.storage.writable.WRITE_ERRORS) when the disk will
        not take it."""
        ...

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Every stored (key, value) (blocking: the command line). Raises as `get`."""
        ...

    def keep(self, key: Hashable, entry: Entry) -> bool:
        """Store unless a newer one is stored (blocking: the command line). Raises as
        `set_now`."""
        ...

    def announce(self) -> None:
        """Tell every worker sharing the records that they changed (blocking). Never fails."""
        ...

    def on_forgotten(self, listener: Callable[[list[Hashable]], Awaitable[None]]) -> None:
        """Call `listener` with the keys another worker or replica forgot, once they are
        forgotten here, for what each machine keeps of its own beside the records (a purged
        file's sidecars). Records one machine keeps alone never call it: its workers share one
        cache directory, and the one that forgets drops what it keeps there itself."""
        ...

    def close(self) -> None:
        """Blocking. Raises nothing."""
        ...
