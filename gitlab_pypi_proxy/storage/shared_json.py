"""A small JSON object every worker and replica shares: one coordinator value holds it whole (a
file under the cache directory; Redis in a cluster), so it outlives restarts and a change is
atomic; each worker reads it again only once the coordinator's generation says something changed
(a change here announces one), so a page that consults it costs a comparison, not a read.

For state set rarely that pages or the status page read: the operator's yanks, the private names
a public index also has. Never for what changes per request (each change rewrites the whole
value and tells every worker that their rendered pages are out of date).
"""

import asyncio
import json
from collections.abc import Callable, Hashable
from typing import Any

from gitlab_pypi_proxy.storage.coordinator import Coordinator, SharedValue

Document = dict[str, Any]


class TooLarge(ValueError):
    """A change that would make the value larger than it may be; nothing was changed."""


class SharedJson:
    def __init__(self, coordinator: Coordinator, name: str, size: int) -> None:
        """`size`: the most bytes the encoded object may take (blocking: opens the value)."""
        self.coordinator, self.name, self.size = coordinator, name, size
        self.value: SharedValue = coordinator.value(name, size)
        self._read: tuple[Hashable, Document] | None = None  # (generation, object)

    async def current(self) -> Document:
        """The object as stored (read again once any worker announced a change)."""
        generation = self.coordinator.generation()  # before the read: a racing change wins
        read = self._read
        if read is not None and read[0] == generation:
            return read[1]
        document = _parse(await asyncio.to_thread(self.value.read))
        self._read = (generation, document)
        return document

    async def read(self) -> Document:
        """The object as stored now (a read every time: for the status page)."""
        return _parse(await asyncio.to_thread(self.value.read))

    async def change(
        self, change: Callable[[Document], Document], *, announce: bool = True
    ) -> Document:
        """Apply `change` to the stored object atomically; the new object. `announce`: tell
        every worker and replica (their rendered pages are out of date). Raises TooLarge
        (nothing changed) when it would not fit in `size`."""

        def update(data: bytes | None) -> tuple[bytes, Document]:
            new = change(_parse(data))
            encoded = json.dumps(new, sort_keys=True, separators=(",", ":")).encode()
            if len(encoded) > self.size:
                raise TooLarge(f"{self.name} would take more than {self.size} bytes")
            return encoded, new

        document = await asyncio.to_thread(self.value.update, update)
        if announce:
            await self.coordinator.changed()
        return document


def _parse(data: bytes | None) -> Document:
    """The stored object; an empty or unreadable value is an empty one."""
    if not data:
        return {}
    try:
        document = json.loads(data)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}
