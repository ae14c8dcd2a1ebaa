from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.errors import KeyFileError
from gateway.smartapi.security.keys import (
    ED25519,
    ES256,
    PS256,
    TrustStore,
    algorithm_of,
    load_private_key,
    load_public_key,
    sign,
    verify,
)

from .conftest import Keys


def test_trust_file_loads_keys_and_certificates(keys: Keys) -> None:
    trust = keys.trust
    assert len(trust.peers) == 6
    peer = trust.by_key_id("ams-p256")
    assert peer is not None and peer.roles == frozenset({"ams"})
    assert {algorithm_of(p.key) for p in trust.peers} == {ED25519, ES256, PS256}


@pytest.mark.parametrize("kind", ["ed25519", "p256", "rsa"])
def test_sign_and_verify(keys: Keys, kind: str) -> None:
    ident = keys.ams[kind]
    sig = sign(ident.key, b"data")
    alg = algorithm_of(ident.key)
    assert verify(ident.public_key, alg, sig, b"data")
    assert not verify(ident.public_key, alg, sig, b"datA")
    other = keys.mgms[kind]
    assert not verify(other.public_key, alg, sig, b"data")


def _write(path: Path, key: object) -> Path:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_weak_or_foreign_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="1024 bits"):
        load_private_key(_write(tmp_path / "small.key", rsa.generate_private_key(65537, 1024)))
    with pytest.raises(KeyFileError, match="P-256"):
        load_private_key(_write(tmp_path / "p384.key", ec.generate_private_key(ec.SECP384R1())))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(KeyFileError, match=r"junk\.pem"):
        load_public_key(tmp_path / "junk.pem")
    with pytest.raises(KeyFileError, match=r"missing\.key"):
        load_private_key(tmp_path / "missing.key")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("peers: 3", "list 'peers'"),
        ("peers:\n  - key_id: a\n    public_key: x.pub", "needs key_id, sender"),
        ("peers:\n  - {key_id: a, sender: 'urn:a', public_key: nowhere.pub}", "nowhere.pub"),
        (":\n- [", "cannot read trust file"),
    ],
)
def test_bad_trust_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=match):
        TrustStore.from_file(path)


def test_repeated_key_ids(keys: Keys, tmp_path: Path) -> None:
    pub = keys.dir / "ams-rsa.pub"
    path = tmp_path / "trust.yaml"
    entry = f"  - {{key_id: a, sender: 'urn:a', public_key: {pub}}}\n"
    path.write_text("peers:\n" + entry + entry)
    with pytest.raises(KeyFileError, match="repeated"):
        TrustStore.from_file(path)
