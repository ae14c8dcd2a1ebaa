from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.cli import main
from gateway.north.certs import AMS_IDENTITY, GATEWAY_IDENTITY, init_dev_pki
from gateway.smartapi.security.keys import TrustStore, load_private_key


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_dev_pki_issues_verifiable_loopback_certificates(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path)
    ca = cert(pki.ca)
    for party, uri in (("gateway", GATEWAY_IDENTITY), ("ams", AMS_IDENTITY)):
        leaf = cert(pki[party])
        leaf.verify_directly_issued_by(ca)
        alt = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in alt.get_values_for_type(x509.DNSName)
        assert ipaddress.ip_address("127.0.0.1") in alt.get_values_for_type(x509.IPAddress)
        assert alt.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)


def test_private_keys_are_owner_only(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path)
    keys = [p for name, p in pki.files.items() if name.endswith(("-key", "-signing"))]
    assert len(keys) == 8
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_trust_files_name_the_other_sides_signing_keys(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path)
    gateway_trusts = TrustStore.from_file(pki["trust-gateway"])
    assert [p.sender for p in gateway_trusts.by_sender(AMS_IDENTITY)] == [AMS_IDENTITY]
    ams_key = load_private_key(pki["ams-signing"])
    (peer,) = gateway_trusts.by_sender(AMS_IDENTITY)
    assert peer.key == ams_key.public_key()
    ams_trusts = TrustStore.from_file(pki["trust-ams"])
    assert [p.sender for p in ams_trusts.peers] == [GATEWAY_IDENTITY]


def test_an_existing_ca_is_kept_unless_forced(tmp_path: Path) -> None:
    first = init_dev_pki(tmp_path).ca.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        init_dev_pki(tmp_path)
    assert init_dev_pki(tmp_path, force=True).ca.read_bytes() != first


def test_certs_init_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "init", str(tmp_path / "certs")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "gateway-signing" in out["files"]
    assert (tmp_path / "certs" / "ca.pem").exists()
    assert main(["certs", "init", str(tmp_path / "certs")]) == 1
    assert "exists" in capsys.readouterr().err
