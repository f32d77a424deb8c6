"""Views (`[[views]]`): the same index over a subset of the sources, in the view's own priority
order, served at `/<view>/simple/`, `/<view>/files/` and `/<view>/pypi/`.

A view is the index a reader restricted to the view's sources would see: every rule of the whole
index applies (private-first, the guard, yanks, read rights), and a reader sees the intersection
of the view and the sources it may read, so a view never widens what anyone may read. Ownership
counts every configured GitLab source: a name a GitLab source outside the view has is a 404 in
the view, never a public package, so the dependency-confusion guarantee holds per view. Within
the view its order decides which source wins a file name; the sources outside it come after,
only to count ownership."""

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
