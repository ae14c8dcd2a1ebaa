from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from gateway.smartapi.examples import AMS_SENDER, MGMS_SENDER
from gateway.smartapi.security.keys import Identity, TrustStore


@dataclass(frozen=True)
class Keys:
    dir: Path
    ams: dict[str, Identity]  # by key type: ed25519, p256, rsa
    mgms: dict[str, Identity]
    trust_file: Path

    @property
    def trust(self) -> TrustStore:
        return TrustStore.from_file(self.trust_file)


def _private_pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _cert_pem(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _make() -> dict[str, object]:
    return {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    lines = ["peers:"]
    found: dict[str, dict[str, Identity]] = {"ams": {}, "mgms": {}}
    for who, sender in (("ams", AMS_SENDER), ("mgms", MGMS_SENDER)):
        for kind, key in _make().items():
            key_id = f"{who}-{kind}"
            (d / f"{key_id}.key").write_bytes(_private_pem(key))
            if kind == "p256":
                (d / f"{key_id}.crt").write_bytes(_cert_pem(key, key_id))  # type: ignore[arg-type]
                ref = f"certificate: {key_id}.crt"
            else:
                (d / f"{key_id}.pub").write_bytes(_public_pem(key))
                ref = f"public_key: {key_id}.pub"
            lines += [
                f"  - key_id: {key_id}",
                f"    sender: {sender}",
                f"    {ref}",
                f"    roles: [{who}]",
            ]
            found[who][kind] = Identity.from_file(key_id, sender, d / f"{key_id}.key")
    trust_file = d / "trusted-peers.yaml"
    trust_file.write_text("\n".join(lines) + "\n")
    return Keys(d, found["ams"], found["mgms"], trust_file)
