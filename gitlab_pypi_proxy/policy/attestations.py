"""PEP 740 provenance: read the provenance object an index serves for a file, and verify its
attestations against the file's sha256 with `pypi-attestations`, as PyPI does on upload.

Verification runs with `offline=True`, so the proxy never needs Sigstore's network: the trust
root comes from sigstore-python's TUF cache (under the proxy user's XDG_CACHE_HOME), seeded from
the copy bundled with the installed sigstore. So it is only as new as that cache: an attestation
signed with keys Sigstore added later reads "not verified: ..." until the cache is refreshed,
and a cache that cannot be written ends the same way, never as an error. Nothing here claims
more than was checked. A verification costs milliseconds of CPU and reads the trust root from
disk: run it in a thread, once, when the file and its provenance are kept. Where the cache is
and how to refresh it: docs/architecture.md, "Provenance offline"."""

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gitlab_pypi_proxy.printable import one_line

if TYPE_CHECKING:
    from pypi_attestations import Provenance

# sigstore-python warns on every offline verification that it will not update its trust root;
# offline is this module's choice, said once in the docstring above, not news for each file.
_OFFLINE_NOTICE = "TUF repository is loaded in offline mode"


class _DropOfflineNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_OFFLINE_NOTICE)


logging.getLogger("sigstore._internal.tuf").addFilter(_DropOfflineNotice())


_MAX_LABEL = 200  # the names in a publisher label are the provenance's own: any text


class ProvenanceError(ValueError):
    """Not a PEP 740 provenance object; the message is one line."""


@dataclass(frozen=True)
class Verification:
    verified: bool
    detail: str  # "verified: ..." or "not verified: <why>", one line
    publishers: tuple[str, ...]  # as publisher_label names them


def parse(raw: bytes | str) -> "Provenance":
    """A provenance object from its JSON. Raises ProvenanceError saying what is wrong."""
    # pypi-attestations brings sigstore, pydantic and cryptography (~40 MiB in every process
    # that imports them): loaded with the first provenance a public index offers, not at start.
    from pydantic import ValidationError
    from pypi_attestations import Provenance

    try:
        return Provenance.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "document"
        raise ProvenanceError(f"not a PEP 740 provenance object: {where}: {first['msg']}") from None


def publisher_label(publisher: object) -> str:
    """A Trusted Publisher in a few words, one line: `GitHub owner/repo (release.yml)`, `GitLab
    group/project (.gitlab-ci.yml)`, `Google service@account`, `CircleCI project <id>`."""
    return one_line(_label(publisher), _MAX_LABEL) or "?"


def _label(publisher: object) -> str:
    kind = getattr(publisher, "kind", "?")
    if kind == "GitHub":
        return f"GitHub {publisher.repository} ({publisher.workflow})"  # type: ignore[attr-defined]
    if kind == "GitLab":
        return f"GitLab {publisher.repository} ({publisher.workflow_filepath})"  # type: ignore[attr-defined]
    if kind == "Google":
        return f"Google {publisher.email}"  # type: ignore[attr-defined]
    if kind == "CircleCI":
        return f"CircleCI project {publisher.project_id}"  # type: ignore[attr-defined]
    return str(kind)


def verify(provenance: "Provenance", filename: str, sha256: str) -> Verification:
    """Check every attestation of `provenance` against the file `filename` whose digest is
    `sha256`, each against the Trusted Publisher its bundle names; offline (see the module
    docstring). Verified only when there is at least one attestation and all of them verify."""
    from pydantic import ValidationError
    from pypi_attestations import Distribution

    publishers = tuple(publisher_label(b.publisher) for b in provenance.attestation_bundles)
    try:
        distribution = Distribution(name=filename, digest=sha256.lower())
    except ValidationError:
        return Verification(False, f"not verified: {filename!r} is no wheel or sdist", publishers)
    count = 0
    kinds = set()
    for bundle, label in zip(provenance.attestation_bundles, publishers, strict=True):
        for attestation in bundle.attestations:
            try:
                kind, _ = attestation.verify(bundle.publisher, distribution, offline=True)
            except Exception as exc:  # a library boundary: sigstore, TUF, OS and pydantic errors
                why = one_line(str(exc), 300) or type(exc).__name__
                return Verification(False, f"not verified: {label}: {why}", publishers)
            count += 1
            kinds.add(kind.rstrip("/").rsplit("/", 2)[-2])  # ".../publish/v1" → "publish"
    if not count:
        return Verification(False, "not verified: the provenance holds no attestation", publishers)
    noun = "attestation" if count == 1 else "attestations"
    detail = f"verified: {count} {noun} ({', '.join(sorted(kinds))}) by {', '.join(publishers)}"
    return Verification(True, detail, publishers)
