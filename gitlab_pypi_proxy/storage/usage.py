"""Which cached files clients use and how often the cache answers them, noted off the hit path.

A cache hit must not write to the database: diskcache's least-recently-used policy and its
statistics wrote an SQLite transaction (the access time and a hit counter) on every lookup,
serialised across worker processes, and the waits for that lock were the long tail of warm hits.
Here a lookup only notes in memory, under a lock held for a few instructions, that it happened
and, when the entry's stored access time is older than `STAMP_SECONDS`, that it should be
restamped; the store writes what piled up in one transaction within `FLUSH_SECONDS` of its last
write, from a thread of its own, and when it closes. Eviction's order is thus right to about a
minute, and the hit ratio `cache stats` reads is a few seconds behind.
"""

import threading
from dataclasses import dataclass, field

STAMP_SECONDS = 60.0  # an entry's access time is rewritten at most this often
FLUSH_SECONDS = 2.0  # how often a busy process writes its notes


@dataclass
class Pending:
    hits: int = 0
    misses: int = 0
    stamps: dict[str, float] = field(default_factory=dict)  # sha256 → when it was used

    def __bool__(self) -> bool:
        return bool(self.hits or self.misses or self.stamps)


class Usage:
    """This process's notes not yet written; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = Pending()

    def hit(self, sha256: str, access_time: float, now: float) -> None:
        with self._lock:
            self._pending.hits += 1
            if access_time < now - STAMP_SECONDS:
                self._pending.stamps[sha256] = now

    def miss(self) -> None:
        with self._lock:
            self._pending.misses += 1

    def waiting(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self._pending.hits, self._pending.misses

    def take(self) -> Pending:
        """Everything noted so far, handed over for writing."""
        with self._lock:
            taken, self._pending = self._pending, Pending()
        return taken

    def give_back(self, taken: Pending) -> None:
        """A write that failed: keep its notes for the next one."""
        with self._lock:
            self._pending.hits += taken.hits
            self._pending.misses += taken.misses
            for sha256, when in taken.stamps.items():
                self._pending.stamps.setdefault(sha256, when)
