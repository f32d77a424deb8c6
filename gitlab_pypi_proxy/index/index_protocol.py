"""What every layer of the index speaks: the answers it gives and the protocol the app serves.

The index a client sees is a composition of wrappers, each a behaviour in its own module, built
from the configuration in one place (gitlab_pypi_proxy.services):

    Yanked(Annotated(Guarded(PrivateFirst(
        Merged([NameRules(WithDetails(CachedSource(gitlab source))), ...]),
        [NameRules(CachedSource(public source)), ...],
    ))))

Every layer answers for the sources a reader may read (`allowed`: their names, None for all).
"""

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gitlab_pypi_proxy.model import ProjectList, ProjectPage

T = TypeVar("T")

Readable = frozenset[str] | None
"""The names of the sources a reader may read; None: every source."""


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """One source's answer, as the cache gives it."""

    value: T
    stale: bool  # the upstream could not be reached (or the proxy is offline) and the TTL passed
    fresh_until: float = 0.0  # until when the value may be reused without asking again
    loaded: bool = False  # asked of the upstream for this very answer, not read from the records


class SourceAnswers(Protocol):
    """One source as the index asks it (gitlab_pypi_proxy.index.cached, and what wraps it)."""

    @property
    def name(self) -> str: ...

    async def page(self, name: str) -> Answer[ProjectPage | None]:
        """The source's page of normalized `name` (None: it does not have it)."""
        ...

    async def names(self) -> Answer[frozenset[str]]:
        """Every name the source holds."""
        ...


class Index(Protocol):
    """What the routes ask. Raises NotFound, Unavailable (FailClosed), Offline."""

    async def project_page(self, name: str, allowed: Readable = None) -> ProjectPage:
        """The page of normalized `name` over the sources `allowed`."""
        ...

    async def project_list(self, allowed: Readable = None) -> ProjectList:
        """The names a reader of `allowed` may ask for."""
        ...

    async def check_file(self, sha256: str, filename: str, allowed: Readable = None) -> None:
        """Raise NotFound unless a reader of `allowed` may have this file, or the file it is
        derived from (`<file>.metadata`). Every byte a file route sends passes here first."""
        ...
