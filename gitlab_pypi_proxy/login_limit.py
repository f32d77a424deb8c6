"""Per-client limits on failed logins: a token bucket per client address.

A client may fail `per_minute` times at once, then once more every 60/`per_minute` seconds.
While it is over, its new credentials are refused (429 with Retry-After) before they cost a
password hash; credentials already accepted still work, so a user behind the same NAT as a
guesser keeps working. Each worker process counts its own failures.
"""

import math
import time
from collections.abc import Callable

from gitlab_pypi_proxy.aio import TTLMemo

_MAX_CLIENTS = 10_000  # buckets kept; the least recently failing go first


class LoginLimit:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # failures allowed back per second
        self.clock = clock
        # client → (tokens, when); set again on each failure, so the least recently failing go
        self._buckets: TTLMemo[str | None, tuple[float, float]] = TTLMemo(_MAX_CLIENTS)

    def _tokens(self, client: str | None, now: float) -> float:
        tokens, when = self._buckets.get(client, (self.capacity, now))
        return min(self.capacity, tokens + (now - when) * self.rate)

    def retry_after(self, client: str | None) -> int:
        """0 if `client` may try credentials now, else the whole seconds until it may."""
        if client not in self._buckets:
            return 0
        missing = 1.0 - self._tokens(client, self.clock())
        return 0 if missing <= 0 else max(1, math.ceil(missing / self.rate))

    def failed(self, client: str | None) -> None:
        now = self.clock()
        tokens = max(-self.capacity, self._tokens(client, now) - 1.0)  # at most two windows
        self._buckets.set(client, (tokens, now))
