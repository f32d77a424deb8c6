"""gitlab_pypi_proxy.policy.attestations: PEP 740 provenance parsed and verified offline against a
file's digest, with provenance signed by a Sigstore the test makes (tests/sigstore_double.py)."""

import base64
import json
import logging
from pathlib import Path

import pytest

from gitlab_pypi_proxy.policy import attestations
from tests.sigstore_double import PRODUCTION_TUF, SigstoreDouble

WHEEL = "demo_pkg-1.0-py3-none-any.whl"
SHA = "3f" * 32


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sigstore-python's TUF cache for this test alone (it lives under XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "cache"


@pytest.fixture
def sigstore(cache_home: Path) -> SigstoreDouble:
    double = SigstoreDouble()
    double.install(cache_home)
    return double


def _check(document: dict, filename: str = WHEEL, sha256: str = SHA) -> attestations.Verification:
    return attestations.verify(attestations.parse(json.dumps(document)), filename, sha256)


def test_a_provenance_object_is_parsed_with_its_publishers(sigstore: SigstoreDouble) -> None:
    parsed = attestations.parse(json.dumps(sigstore.provenance(WHEEL, SHA)).encode())
    assert len(parsed.attestation_bundles) == 1
    assert [attestations.publisher_label(b.publisher) for b in parsed.attestation_bundles] == [
        "Google release@acme.iam.gserviceaccount.com"
    ]
    statement = parsed.attestation_bundles[0].attestations[0].statement
    assert statement["subject"] == [{"name": WHEEL, "digest": {"sha256": SHA}}]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not a PEP 740 provenance object"),
        (b'{"version": 1}', "attestation_bundles"),
        (b'{"version": 2, "attestation_bundles": []}', "version"),
        (b"[]", "not a PEP 740 provenance object"),
    ],
)
def test_what_is_no_provenance_object_says_so_in_one_line(raw: bytes, message: str) -> None:
    with pytest.raises(attestations.ProvenanceError, match=message) as caught:
        attestations.parse(raw)
    assert "\n" not in str(caught.value)


def test_a_genuine_attestation_verifies_offline_against_the_files_digest(
    sigstore: SigstoreDouble, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = _check(sigstore.provenance(WHEEL, SHA))
    assert result.verified, result.detail
    assert result.detail == (
        "verified: 1 attestation (publish) by Google release@acme.iam.gserviceaccount.com"
    )
    assert not [r for r in caplog.records if "offline mode" in r.getMessage()]


def test_another_files_digest_is_not_verified(sigstore: SigstoreDouble) -> None:
    result = _check(sigstore.provenance(WHEEL, SHA), sha256="40" * 32)
    assert not result.verified
    assert result.detail == (
        "not verified: Google release@acme.iam.gserviceaccount.com: "
        "Verification failed: subject does not match distribution digest"
    )


def test_another_files_name_is_not_verified(sigstore: SigstoreDouble) -> None:
    result = _check(sigstore.provenance("demo_pkg-1.1-py3-none-any.whl", SHA))
    assert not result.verified
    assert "subject does not match distribution name" in result.detail


def test_a_publisher_other_than_the_signer_is_not_verified(sigstore: SigstoreDouble) -> None:
    document = sigstore.provenance(WHEEL, SHA, email="attacker@evil.iam.gserviceaccount.com")
    document["attestation_bundles"][0]["publisher"]["email"] = (
        "release@acme.iam.gserviceaccount.com"
    )
    result = _check(document)
    assert not result.verified
    assert "SANs do not match" in result.detail


def test_a_statement_changed_after_signing_is_not_verified(sigstore: SigstoreDouble) -> None:
    document = sigstore.provenance(WHEEL, "40" * 32)  # signed for another digest
    envelope = document["attestation_bundles"][0]["attestations"][0]["envelope"]
    statement = json.loads(base64.b64decode(envelope["statement"]))
    statement["subject"][0]["digest"]["sha256"] = SHA  # rewritten to claim this file
    envelope["statement"] = base64.b64encode(json.dumps(statement).encode()).decode()
    result = _check(document)
    assert not result.verified
    assert result.detail.endswith(": DSSE: invalid signature")


def test_a_signature_from_outside_the_trust_root_is_not_verified(cache_home: Path) -> None:
    """Nothing installed in the cache: sigstore-python copies in the production root bundled
    with it and verifies against that, with no network; a signature of our own fails there."""
    result = _check(SigstoreDouble().provenance(WHEEL, SHA))
    assert not result.verified
    assert "failed to build timestamp certificate chain" in result.detail
    cached = cache_home / "sigstore-python" / "tuf" / PRODUCTION_TUF / "trusted_root.json"
    assert json.loads(cached.read_text())["tlogs"][0]["baseUrl"] == "https://rekor.sigstore.dev"


def test_a_trust_root_cache_that_cannot_be_made_is_a_reason_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    result = _check(SigstoreDouble().provenance(WHEEL, SHA))
    assert not result.verified
    assert result.detail.startswith("not verified: Google release@acme.iam.gserviceaccount.com: ")
    assert "Not a directory" in result.detail and "\n" not in result.detail


def test_no_attestation_or_no_file_name_verifies_nothing(sigstore: SigstoreDouble) -> None:
    document = sigstore.provenance(WHEEL, SHA)
    document["attestation_bundles"][0]["attestations"] = []
    assert _check(document) == attestations.Verification(
        False,
        "not verified: the provenance holds no attestation",
        ("Google release@acme.iam.gserviceaccount.com",),
    )
    result = _check(sigstore.provenance(WHEEL, SHA), filename="../etc/passwd")
    assert not result.verified
    assert result.detail == "not verified: '../etc/passwd' is no wheel or sdist"


def test_every_attestation_must_verify(sigstore: SigstoreDouble) -> None:
    document = sigstore.provenance(WHEEL, SHA)
    good = document["attestation_bundles"][0]["attestations"][0]
    other = sigstore.attestation(WHEEL, "40" * 32, "release@acme.iam.gserviceaccount.com")
    document["attestation_bundles"][0]["attestations"] = [good, good]
    assert _check(document).detail.startswith("verified: 2 attestations (publish)")
    document["attestation_bundles"][0]["attestations"] = [good, other]
    assert not _check(document).verified
