"""OSV exports made by tests: small ones written advisory by advisory, and a large one shaped
like the PyPI ecosystem's real `all.zip` (for measuring gitlab_pypi_proxy.policy.osv's load)."""

import json
import random
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def advisory(
    id: str,
    name: str,
    *,
    ranges: Iterable[Mapping[str, Any]] = (),
    versions: Iterable[str] = (),
    aliases: Iterable[str] = (),
    withdrawn: str | None = None,
    ecosystem: str = "PyPI",
    summary: str | None = None,
) -> dict[str, Any]:
    """One OSV advisory affecting one package."""
    document: dict[str, Any] = {
        "schema_version": "1.7.0",
        "id": id,
        "modified": "2025-01-01T00:00:00Z",
        "aliases": list(aliases),
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": list(ranges),
                "versions": list(versions),
            }
        ],
    }
    if withdrawn:
        document["withdrawn"] = withdrawn
    if summary is not None:
        document["summary"] = summary
    return document


def ecosystem_range(*events: tuple[str, str], kind: str = "ECOSYSTEM") -> dict[str, Any]:
    """A range from (event, version) pairs: ecosystem_range(("introduced", "0"), ("fixed", "2"))."""
    return {"type": kind, "events": [{event: version} for event, version in events]}


def write_export(
    path: Path, documents: Iterable[Mapping[str, Any]], raw: Mapping[str, bytes] | None = None
) -> Path:
    """A zip with one `<id>.json` member per document, plus `raw` members written as given."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for document in documents:
            archive.writestr(f"{document['id']}.json", json.dumps(document))
        for name, data in (raw or {}).items():
            archive.writestr(name, data)
    return path


def _releases(rng: random.Random, count: int) -> list[str]:
    versions, major, minor, patch = [], 0, 1, 0
    for _ in range(count):
        step = rng.random()
        if step < 0.05:
            major, minor, patch = major + 1, 0, 0
        elif step < 0.3:
            minor, patch = minor + 1, 0
        else:
            patch += 1
        version = f"{major}.{minor}.{patch}"
        versions.append(version)
        if rng.random() < 0.08:
            versions.append(f"{major}.{minor}.{patch + 1}rc1")
    return versions


def realistic_export(path: Path, *, seed: int = 16, malicious: int = 25_000) -> Path:
    """An export the size and shape of PyPI's all.zip: `malicious` one-package MAL records and
    15,000 GHSA/PYSEC-like records with ranges and long `versions` lists (osv.dev expands ranges
    into them), half of them aliasing a CVE. Heavy-tailed like the real one: 4 packages have 800
    advisories each (tensorflow and its twins have about that many), 3,000 share the rest."""
    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(malicious):
            doc = advisory(
                f"MAL-2025-{i}",
                f"typo-squat-{i}",
                ranges=[ecosystem_range(("introduced", "0"))],
                versions=[f"0.0.{n}" for n in range(rng.randint(1, 3))],
            )
            doc["details"] = "y" * rng.randint(300, 1500)
            archive.writestr(f"MAL-2025-{i}.json", json.dumps(doc))
        heavy = [(f"heavy-{p}", _releases(rng, 400)) for p in range(4)]
        packages = [(f"package-{p}", _releases(rng, rng.randint(20, 400))) for p in range(3000)]
        for i in range(15_000):
            name, releases = heavy[i % 4] if i < 3200 else rng.choice(packages)
            fixed_at = rng.randrange(1, len(releases))
            introduced_at = rng.randrange(0, fixed_at)
            events = [("introduced", releases[introduced_at] if introduced_at else "0")]
            events.append(("fixed", releases[fixed_at]))
            ranges = [ecosystem_range(*events)]
            if rng.random() < 0.2:
                ranges.append(ecosystem_range(("introduced", "0"), ("last_affected", "0.0.1")))
            prefix = "GHSA-" if i % 2 else "PYSEC-2025-"
            doc = advisory(
                f"{prefix}{i:05d}",
                name,
                ranges=ranges,
                versions=releases[introduced_at:fixed_at],
                aliases=[f"CVE-2025-{i:05d}"] if i % 2 == 0 else [],
            )
            doc["details"] = "x" * rng.randint(200, 4000)  # real advisories carry prose
            archive.writestr(f"{doc['id']}.json", json.dumps(doc))
    return path
