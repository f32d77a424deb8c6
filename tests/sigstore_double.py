"""A Sigstore of our own for provenance tests: a Fulcio-like CA, a CT log and a Rekor log, each a
key made by the test, and PEP 740 provenance objects signed with them as Sigstore signs real
ones (a short-lived certificate with an embedded SCT, a DSSE envelope over an in-toto
statement, a Rekor dsse entry with its signed entry timestamp, inclusion proof and signed
checkpoint).

`install` writes its trust root where sigstore-python's offline mode reads the production trust
root (its TUF cache under XDG_CACHE_HOME), so pypi-attestations verifies these objects with no
network, exactly as it verifies PyPI's against the real root.
"""

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

PRODUCTION_TUF = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PUBLISH_V1 = "https://docs.pypi.org/attestations/publish/v1"
GOOGLE = "https://accounts.google.com"
_OIDC_ISSUER = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(key: ec.EllipticCurvePrivateKey) -> bytes:
    """RFC 6962's key id: the SHA-256 of the public key's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(_spki(key)).digest()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _canonical(value: Any) -> bytes:
    """RFC 8785 for what this module signs (ASCII strings, integers, objects)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class SigstoreDouble:
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    rekor_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore double"),
                x509.NameAttribute(NameOID.COMMON_NAME, "sigstore-double"),
            ]
        )
        public = self.ca_key.public_key()
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(days=1))
            .not_valid_after(self.now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.ca_key, hashes.SHA384())
        )

    # --- the trust root -----------------------------------------------------------------

    def trusted_root(self) -> dict[str, Any]:
        start = (self.now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def log(url: str, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key)),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(_key_id(key))},
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log("https://rekor.sigstore-double.invalid", self.rekor_key)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "sigstore double", "commonName": "sigstore-double"},
                    "uri": "https://fulcio.sigstore-double.invalid",
                    "certChain": {
                        "certificates": [
                            {
                                "rawBytes": _b64(
                                    self.ca_cert.public_bytes(serialization.Encoding.DER)
                                )
                            }
                        ]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [log("https://ctfe.sigstore-double.invalid", self.ct_key)],
            "timestampAuthorities": [],
        }

    def install(self, cache_home: Path) -> Path:
        """Write the trust root where sigstore-python's offline mode looks for the production
        one when XDG_CACHE_HOME is `cache_home`."""
        targets = cache_home / "sigstore-python" / "tuf" / PRODUCTION_TUF
        targets.mkdir(parents=True, exist_ok=True)
        path = targets / "trusted_root.json"
        path.write_text(json.dumps(self.trusted_root()))
        return path

    # --- signing ------------------------------------------------------------------------

    def _certificate(self, key: ec.EllipticCurvePrivateKey, email: str) -> x509.Certificate:
        """A Fulcio-style leaf for `email`, with an SCT from the CT log embedded."""
        serial = x509.random_serial_number()
        issuer = GOOGLE.encode()

        def builder() -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(self.now - timedelta(minutes=2))
                .not_valid_after(self.now + timedelta(minutes=8))
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=False,
                        crl_sign=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                    critical=False,
                )
                .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=True)
                .add_extension(x509.UnrecognizedExtension(_OIDC_ISSUER, issuer), critical=False)
                .add_extension(
                    x509.UnrecognizedExtension(
                        _OIDC_ISSUER_V2, b"\x0c" + _der_length(len(issuer)) + issuer
                    ),
                    critical=False,
                )
            )

        # The SCT signs the certificate as it is without the SCT (RFC 6962's precertificate).
        tbs = builder().sign(self.ca_key, hashes.SHA384()).tbs_certificate_bytes
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key)).digest()
        timestamp = int((self.now - timedelta(minutes=1)).timestamp() * 1000)
        signed_entry = issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
        digitally_signed = struct.pack("!BBQH", 0, 0, timestamp, 1) + signed_entry + b"\0\0"
        signature = _sign(self.ct_key, digitally_signed)
        sct = (
            struct.pack("!B32sQH", 0, _key_id(self.ct_key), timestamp, 0)
            + struct.pack("!BBH", 4, 3, len(signature))
            + signature
        )
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        octets = b"\x04" + _der_length(len(sct_list)) + sct_list
        certificate = (
            builder()
            .add_extension(x509.UnrecognizedExtension(_SCT_LIST, octets), critical=False)
            .sign(self.ca_key, hashes.SHA384())
        )
        assert certificate.tbs_precertificate_bytes == tbs
        return certificate

    def _log_entry(self, certificate: x509.Certificate, payload: bytes, signature: bytes) -> dict:
        """A Rekor dsse/0.0.1 entry with its promise, proof and checkpoint (a one-leaf log)."""
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        body = _canonical(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": "0" * 64},
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(payload).hexdigest(),
                    },
                    "signatures": [{"signature": _b64(signature), "verifier": _b64(pem)}],
                },
            }
        )
        log_id = _key_id(self.rekor_key)
        integrated = int((self.now - timedelta(minutes=1)).timestamp())
        promise = _sign(
            self.rekor_key,
            _canonical(
                {
                    "body": _b64(body),
                    "integratedTime": integrated,
                    "logID": log_id.hex(),
                    "logIndex": 0,
                }
            ),
        )
        root = hashlib.sha256(b"\0" + body).digest()
        note = f"rekor.sigstore-double.invalid - 1\n1\n{_b64(root)}\n"
        checkpoint = _sign(self.rekor_key, note.encode())
        envelope = f"{note}\n\u2014 rekor.sigstore-double.invalid {_b64(log_id[:4] + checkpoint)}\n"
        return {
            "logIndex": "0",
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": _b64(promise)},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": _b64(root),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": envelope},
            },
            "canonicalizedBody": _b64(body),
        }

    def attestation(self, filename: str, sha256: str, email: str) -> dict[str, Any]:
        """A PEP 740 publish attestation of `filename` with `sha256`, signed as `email`."""
        statement = _canonical(
            {
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": filename, "digest": {"sha256": sha256}}],
                "predicateType": PUBLISH_V1,
                "predicate": None,
            }
        )
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._certificate(key, email)
        pae = b"DSSEv1 %d %s %d %s" % (
            len(PAYLOAD_TYPE),
            PAYLOAD_TYPE.encode(),
            len(statement),
            statement,
        )
        signature = _sign(key, pae)
        return {
            "version": 1,
            "verification_material": {
                "certificate": _b64(certificate.public_bytes(serialization.Encoding.DER)),
                "transparency_entries": [self._log_entry(certificate, statement, signature)],
            },
            "envelope": {"statement": _b64(statement), "signature": _b64(signature)},
        }

    def provenance(
        self, filename: str, sha256: str, email: str = "release@acme.iam.gserviceaccount.com"
    ) -> dict[str, Any]:
        """A PEP 740 provenance object for one file, published by a Google service account."""
        return {
            "version": 1,
            "attestation_bundles": [
                {
                    "publisher": {"kind": "Google", "email": email},
                    "attestations": [self.attestation(filename, sha256, email)],
                }
            ],
        }
