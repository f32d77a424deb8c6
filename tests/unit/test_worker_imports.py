"""What every process of `serve` loads at start: none of the heavy libraries only some
configurations or some pages need (peak RSS target of issue 14: 150 MiB for all processes)."""

import json
import subprocess
import sys

import pytest

PROBE = "import json, sys, proxy.cli, proxy.http.app; print(json.dumps(sorted(sys.modules)))"


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "bs4",  # 8 MiB: the root index is parsed with the standard library's tokenizer
        "pypi_attestations",  # with sigstore, pydantic and cryptography ~40 MiB: first provenance
        "sigstore",
        "pydantic",
        "obstore",  # [storage] backend = "s3" only
        "redis",  # [cluster] only
    ],
)
def test_serve_does_not_load_at_start(loaded: set[str], module: str) -> None:
    assert module not in loaded
