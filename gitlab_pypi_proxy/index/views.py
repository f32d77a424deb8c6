"""Views (`[[views]]`): the same index over a subset of the sources, in the view's own priority
order, served at `/<view>/simple/` with its files under `/<view>/files/` and its PyPI JSON API
under `/<view>/pypi/`.

A view is the index a reader restricted to the view's sources would see: every rule of the whole
index applies (private-first, the guard, yanks, read rights), and a reader sees the intersection
of the view and the sources it may read. So a view never widens what anyone may read, and the one
read check (`allowed`) keeps its files to the view's sources.

Ownership counts every configured GitLab source, as it does for a reader who may not read some of
them: a name a GitLab source outside the view has is a 404 in the view, never the public index's
package of that name. A view of public sources alone therefore cannot be used to pull a public
package over a private name (the dependency-confusion guarantee holds per view). Within the
view, its order decides which source wins a file name; the sources outside it come after, only
to count ownership.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gitlab_pypi_proxy.index.index_protocol import Index, Readable

T = TypeVar("T")


@dataclass(frozen=True)
class View:
    name: str
    sources: tuple[str, ...]  # in the view's priority order
    index: Index

    def readable(self, allowed: Readable) -> frozenset[str]:
        """What a reader of `allowed` (None: every source) reads through this view."""
        mine = frozenset(self.sources)
        return mine if allowed is None else mine & allowed


def in_view_order(items: Sequence[T], names: Sequence[str], name: Callable[[T], str]) -> list[T]:
    """`items` with those named in `names` first, in that order, then the rest as they were."""
    rank = {n: i for i, n in enumerate(names)}
    first = sorted((i for i in items if name(i) in rank), key=lambda i: rank[name(i)])
    return first + [i for i in items if name(i) not in rank]
