"""Asking every source for a name now (`POST /-/refresh/<name>`): GitLab sends no event when a
package is published to it, so a CI job that publishes straight to GitLab calls this and the
new version is listed at once, not after `index_ttl` (or `negative_ttl` for a new name).

Each source's page is fetched again, whatever is kept, and kept in place of the old one
(gitlab_pypi_proxy.index.cached: `CachedSource.refresh`); a source that cannot answer keeps what
it had, so a refresh during an outage loses nothing. The project lists of the GitLab sources are
then forgotten as after an upload, which tells every worker and replica that what they rendered
is out of date: their next page reads the new records (in a cluster, the newer of Redis's and
their own). A source whose include/exclude rules refuse the name is not asked.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from gitlab_pypi_proxy.errors import ProxyError
from gitlab_pypi_proxy.index.cached import CachedSource, NamesKey
from gitlab_pypi_proxy.model import ProjectPage
from gitlab_pypi_proxy.names import file_version
from gitlab_pypi_proxy.policy import rules
from gitlab_pypi_proxy.policy.rules import PolicySettings
from gitlab_pypi_proxy.storage.records import RecordStore


@dataclass(frozen=True)
class Said:
    """What one source said about the name."""

    source: str
    outcome: str  # "found", "not found", "failed" (it could not say), "not asked" (its rules)
    versions: tuple[str, ...] = ()
    files: int = 0
    reason: str = ""

    def as_json(self) -> dict[str, object]:
        said: dict[str, object] = {"source": self.source, "outcome": self.outcome}
        if self.outcome == "found":
            said |= {"versions": list(self.versions), "files": self.files}
        if self.reason:
            said["reason"] = self.reason
        return said


def _version_key(text: str) -> tuple[int, Version | str]:
    try:
        return 1, Version(text)
    except InvalidVersion:
        return 0, text


def _found(source: str, page: ProjectPage | None) -> Said:
    if page is None:
        return Said(source, "not found")
    versions = {v for f in page.files if (v := file_version(f.filename))}
    return Said(source, "found", tuple(sorted(versions, key=_version_key)), len(page.files))


async def _ask(source: CachedSource, name: str, policy: PolicySettings) -> Said:
    refused = rules.refusal(policy, source.name, name)
    if refused:
        return Said(source.name, "not asked", reason=refused)
    try:
        return _found(source.name, await source.refresh(name))
    except ProxyError as exc:
        return Said(source.name, "failed", reason=str(exc))


async def refresh(
    name: str,
    sources: Sequence[CachedSource],
    owners: Sequence[str],
    records: RecordStore,
    policy: PolicySettings,
) -> list[Said]:
    """Ask each of `sources` for normalized `name` at once and keep what they say; then every
    worker and replica lists it (`owners`: the GitLab sources, whose project lists change)."""
    said = await asyncio.gather(*(_ask(s, name, policy) for s in sources))
    await records.forget(*(NamesKey(s).raw for s in owners))
    return list(said)
