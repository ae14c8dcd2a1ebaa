"""The published Smart API 1.1 library as the peer, and the keys of both sides (RSA 2048,
the library's default size)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.smartapi.peers import Dialect, PeerProfile, Profiles
from gateway.smartapi.security.keys import Identity, TrustStore
from tests.interop.peer import LibraryPeer, install
from tests.unit.smartapi.conftest import demo_config, table

__all__ = ["demo_config", "table"]  # the demo microgrid's point table, as in the unit tests

#: the library peer's Smart API identity (its generatedBy)
PEER = "https://ams.example.net/smartapi-1.1"
GATEWAY = "urn:mgms:gateway:demo-microgrid"
#: the peer's clock runs in this zone: its naive times must be read in it
PEER_TZ = "Europe/Helsinki"


@pytest.fixture(scope="session")
def library() -> LibraryPeer:
    return LibraryPeer(install(), tz=PEER_TZ)


@dataclass(frozen=True)
class Keys:
    dir: Path
    peer_key: Path  # the library's private key (PEM)
    peer_pub: Path
    gateway_key: Path
    gateway_pub: Path
    trust: TrustStore  # the gateway's: the peer's public key for PEER
    identity: Identity  # the gateway's signing key


def _write(key: rsa.RSAPrivateKey, private: Path, public: Path) -> None:
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # PyCrypto's importKey reads it
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("interop-keys")
    for who in ("peer", "gateway"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(key, d / f"{who}.key", d / f"{who}.pub")
    trust = d / "trust.yaml"
    trust.write_text(
        f"peers:\n  - key_id: ams-11\n    sender: {PEER}\n    public_key: peer.pub\n"
        "    roles: [ams]\n"
    )
    return Keys(
        dir=d,
        peer_key=d / "peer.key",
        peer_pub=d / "peer.pub",
        gateway_key=d / "gateway.key",
        gateway_pub=d / "gateway.pub",
        trust=TrustStore.from_file(trust),
        identity=Identity.from_file("mgms-1", GATEWAY, d / "gateway.key"),
    )


@pytest.fixture(scope="session")
def profiles() -> Profiles:
    return Profiles({PEER: PeerProfile(Dialect.SMARTAPI_11, PEER_TZ)})
