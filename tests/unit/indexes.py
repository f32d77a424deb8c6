"""The index over in-process sources, composed the way the services compose it."""

from collections.abc import Mapping, Sequence
from pathlib import Path

from gitlab_pypi_proxy.index.cached import Freshness
from gitlab_pypi_proxy.policy.advisories import Advisories
from gitlab_pypi_proxy.policy.rules import PolicySettings
from gitlab_pypi_proxy.services import Composed, compose
from gitlab_pypi_proxy.sources.base import Parts, Source
from gitlab_pypi_proxy.storage.metadata_store import MetadataStore
from gitlab_pypi_proxy.storage.stores import Stores


def composed(
    tmp_path: Path,
    private: Sequence[Source | Parts] = (),
    public: Sequence[Source | Parts] = (),
    *,
    ttl: float = 300,
    negative_ttl: float | None = None,
    offline: bool = False,
    allow_public: Mapping[str, frozenset[str]] | None = None,
    yanked: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
    stores: Stores | None = None,
    policy: PolicySettings | None = None,
    advisories: Advisories | None = None,
    views: Mapping[str, Sequence[str]] | None = None,
) -> Composed:
    """`private` sources own their names (GitLab's), `public` ones answer for the rest; a Parts
    brings its capabilities too. Every store lives in `tmp_path` (or is `stores`)."""

    def parts(source: Source | Parts, owns: bool) -> Parts:
        return source if isinstance(source, Parts) else Parts(source, owns_names=owns)

    return compose(
        [*(parts(s, True) for s in private), *(parts(s, False) for s in public)],
        stores or Stores.local(tmp_path, 2**30),
        MetadataStore(tmp_path),
        Freshness(ttl, ttl if negative_ttl is None else negative_ttl, offline),
        allow_public=allow_public,
        yanked=yanked,
        policy=policy,
        advisories=advisories,
        views=views,
    )
