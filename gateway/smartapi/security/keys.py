"""Keys and trusted peers, read from files named in the config.

Own identity: a PEM private key (Ed25519, ECDSA P-256 or RSA >= 2048 bits) with the key id
and sender IRI it signs as. Trusted peers: a YAML file listing, per peer, the key id it
signs with, the sender IRI (smartapi:generatedBy) it may speak for, its public key or
X.509 certificate (PEM, path relative to the trust file) and its roles:

    peers:
      - key_id: ams-1
        sender: https://ams.example.net/smartapi
        certificate: ams-1.crt        # or public_key: ams-1.pub.pem
        roles: [ams]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from gateway.errors import KeyFileError

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: signature algorithms of the secure profile, by key type
ED25519 = "Ed25519"
ES256 = "ES256"  # ECDSA P-256 with SHA-256, DER-encoded signature
PS256 = "PS256"  # RSA-PSS with SHA-256, salt length = digest length


def _check_key(key: object, where: str) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"{where}: EC key on {key.curve.name}, the profile uses P-256")
    elif isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise KeyFileError(f"{where}: RSA key of {key.key_size} bits, at least 2048 needed")
    elif not isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{where}: unsupported key type {type(key).__name__}")


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=password)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: cannot read private key: {exc}") from exc
    _check_key(key, str(path))
    return key  # type: ignore[return-value]


def load_public_key(path: Path) -> PublicKey:
    """A PEM public key or the public key of a PEM X.509 certificate."""
    try:
        data = path.read_bytes()
        if b"BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: cannot read public key: {exc}") from exc
    _check_key(key, str(path))
    return key  # type: ignore[no-any-return]


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return ES256
    return PS256


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data, _PSS, hashes.SHA256())


def verify(key: PublicKey, algorithm: str, signature: bytes, data: bytes) -> bool:
    if algorithm != algorithm_of(key):
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, data, _PSS, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """This gateway's signing (and decryption) key."""

    key_id: str
    sender: str
    key: PrivateKey

    @classmethod
    def from_file(cls, key_id: str, sender: str, path: Path) -> Identity:
        return cls(key_id, sender, load_private_key(path))

    @property
    def public_key(self) -> PublicKey:
        return self.key.public_key()


@dataclass(frozen=True)
class Peer:
    key_id: str
    sender: str
    key: PublicKey
    roles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TrustStore:
    peers: tuple[Peer, ...] = ()

    def by_key_id(self, key_id: str) -> Peer | None:
        return next((p for p in self.peers if p.key_id == key_id), None)

    def by_sender(self, sender: str) -> list[Peer]:
        return [p for p in self.peers if p.sender == sender]

    @classmethod
    def from_file(cls, path: Path) -> TrustStore:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise KeyFileError(f"{path}: cannot read trust file: {exc}") from exc
        entries = data.get("peers") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise KeyFileError(f"{path}: needs a list 'peers'")
        peers: list[Peer] = []
        for i, entry in enumerate(entries):
            where = f"{path}: peers[{i}]"
            if not isinstance(entry, dict):
                raise KeyFileError(f"{where}: not a mapping")
            missing = [k for k in ("key_id", "sender") if not isinstance(entry.get(k), str)]
            files = [k for k in ("public_key", "certificate") if k in entry]
            if missing or len(files) != 1:
                raise KeyFileError(
                    f"{where}: needs key_id, sender and one of public_key or certificate"
                )
            roles = entry.get("roles", [])
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise KeyFileError(f"{where}: roles must be a list of names")
            key = load_public_key(path.parent / str(entry[files[0]]))
            peers.append(Peer(entry["key_id"], entry["sender"], key, frozenset(roles)))
        ids = [p.key_id for p in peers]
        if len(set(ids)) != len(ids):
            raise KeyFileError(f"{path}: key ids repeated")
        return cls(tuple(peers))
