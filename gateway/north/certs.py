"""Development PKI for the demo and the tests (`mgms certs init DIR`).

Makes a private CA, TLS certificates for the gateway, the AMS and an operator (EC P-256,
loopback host names, both server and client use so either side can be client or server),
Ed25519 Smart API signing keys for the gateway, the AMS and the operator, and the trust
files naming which signers each side accepts. Private keys are written mode 0600. Not for
production: a real deployment uses certificates and keys from the operator's PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.north.config import (
    AmsEndpoints,
    MqttConfig,
    NorthConfig,
    PeerRule,
    RetryPolicy,
    Role,
    ServerConfig,
    SigningKeys,
    TlsFiles,
)
from gateway.north.wire import Channel

LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

#: Smart API identities (generatedBy) of the demo parties; also in their certificates' SAN URI
GATEWAY_IDENTITY = "https://mgms.example/gateway"
AMS_IDENTITY = "https://ams.example/ams"
OPERATOR_IDENTITY = "https://mgms.example/operator"

#: party -> (signing key id, Smart API identity, role in the peer's trust file)
SIGNERS: dict[str, tuple[str, str, str]] = {
    "gateway": ("gateway-1", GATEWAY_IDENTITY, "mgms"),
    "ams": ("ams-1", AMS_IDENTITY, "ams"),
    "operator": ("operator-1", OPERATOR_IDENTITY, "operator"),
}
#: trust file -> the parties whose signatures it trusts
TRUST_FILES: dict[str, tuple[str, ...]] = {
    "trust-gateway.yaml": ("ams", "operator"),
    "trust-ams.yaml": ("gateway",),
}


@dataclass(frozen=True)
class Issuer:
    """A CA: its key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MGMS development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(
    days: float, not_before: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """From `not_before` (default: 5 minutes ago, which tolerates clock skew between the
    demo parties) for `days` days from now; a window wholly in the past or the future
    makes the expired and not-yet-valid certificates of the fault tests."""
    now = dt.datetime.now(dt.UTC)
    start = not_before or now - dt.timedelta(minutes=5)
    return start, now + dt.timedelta(days=days)


def make_ca(common_name: str = "MGMS development CA", days: float = 3650) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(key, cert)


def load_issuer(cert_path: Path, key_path: Path) -> Issuer:
    """A CA from its PEM files (to issue more certificates from a dev CA)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an EC private key")
    return Issuer(key, cert)


def issue(
    ca: Issuer,
    common_name: str,
    *,
    hosts: Sequence[str] = LOOPBACK_HOSTS,
    uris: Sequence[str] = (),
    days: float = 825,
    not_before: dt.datetime | None = None,
) -> KeyPair:
    """A leaf certificate usable as TLS server and client, for `hosts` (DNS names or IPs),
    valid from `not_before` (default: now) until `days` days from now (negative: expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    alt += [x509.UniformResourceIdentifier(u) for u in uris]
    not_before, not_after = _validity(days, not_before)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return KeyPair(key, builder.sign(ca.key, hashes.SHA256()))


def write_private(path: Path, pem: bytes) -> None:
    """Write a private key readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def key_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_pair(directory: Path, stem: str, pair: KeyPair | Issuer) -> tuple[Path, Path]:
    """Write `<stem>.pem` and `<stem>.key`; return their paths."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert_pem(pair.cert))
    write_private(key_path, key_pem(pair.key))
    return cert_path, key_path


def write_signing_key(directory: Path, stem: str) -> tuple[Path, Path]:
    """A fresh Ed25519 signing key as `<stem>.key` (PKCS#8) and `<stem>.pub` (SPKI)."""
    key = ed25519.Ed25519PrivateKey.generate()
    key_path, pub_path = directory / f"{stem}.key", directory / f"{stem}.pub"
    write_private(key_path, key_pem(key))
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path


@dataclass(frozen=True)
class DevPki:
    """The files `init_dev_pki` wrote."""

    directory: Path
    ca: Path
    files: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


#: name -> (common name, SAN URIs) of the TLS certificates made by init_dev_pki
DEV_PARTIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "gateway": ("mgms-gateway", (GATEWAY_IDENTITY,)),
    "ams": ("ams", (AMS_IDENTITY,)),
    "operator": ("operator", (OPERATOR_IDENTITY,)),
    "broker": ("mqtt-broker", ()),  # an MQTT broker for the demo's MQTT transport
}


def init_dev_pki(directory: Path, *, force: bool = False) -> DevPki:
    """Create the development CA, TLS certificates and signing keys in `directory`.

    Refuses to overwrite an existing CA unless `force`: a new CA would silently invalidate
    every certificate issued from the old one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.pem").exists() and not force:
        raise FileExistsError(f"{directory / 'ca.pem'} exists (use --force to replace it)")
    ca = make_ca()
    ca_path, ca_key = write_pair(directory, "ca", ca)
    files: dict[str, Path] = {"ca": ca_path, "ca-key": ca_key}
    for name, (common_name, uris) in DEV_PARTIES.items():
        cert_path, key_path = write_pair(directory, name, issue(ca, common_name, uris=uris))
        files[name] = cert_path
        files[f"{name}-key"] = key_path
    for party in SIGNERS:
        key_path, pub_path = write_signing_key(directory, f"{party}-signing")
        files[f"{party}-signing"] = key_path
        files[f"{party}-signing-pub"] = pub_path
    for name, parties in TRUST_FILES.items():
        files[name.removesuffix(".yaml")] = write_trust_file(directory / name, parties)
    return DevPki(directory, ca_path, files)


def write_trust_file(path: Path, parties: tuple[str, ...]) -> Path:
    """A trust file (gateway.smartapi.security.keys format) naming the parties' public
    signing keys, which sit beside it."""
    lines = ["# Smart API signers trusted here (written by `mgms certs init`)", "peers:"]
    for party in parties:
        key_id, sender, role = SIGNERS[party]
        lines += [
            f"  - key_id: {key_id}",
            f"    sender: {sender}",
            f"    public_key: {party}-signing.pub",
            f"    roles: [{role}]",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def dev_north_config(
    directory: Path,
    *,
    ams_url: str,
    port: int = 0,
    mqtt: MqttConfig | None = None,
    outbox: RetryPolicy | None = None,
) -> NorthConfig:
    """The gateway's `north:` section for the files of `init_dev_pki(directory)`: our
    certificate and signing key, the AMS and the operator allowed, the AMS at `ams_url`
    (https://host:port) with the simulator's paths. For the demo and the tests."""
    return NorthConfig(
        transport="mqtt" if mqtt else "https",
        identity=GATEWAY_IDENTITY,
        tls=TlsFiles(
            ca=(directory / "ca.pem",),
            cert=directory / "gateway.pem",
            key=directory / "gateway.key",
        ),
        signing=SigningKeys(
            key=directory / "gateway-signing.key",
            key_id=SIGNERS["gateway"][0],
            trust=directory / "trust-gateway.yaml",
        ),
        allow=(
            PeerRule(subject=DEV_PARTIES["ams"][0], role=Role.AMS, senders=(AMS_IDENTITY,)),
            PeerRule(
                subject=DEV_PARTIES["operator"][0], role=Role.OPERATOR, senders=(OPERATOR_IDENTITY,)
            ),
        ),
        server=ServerConfig(port=port),
        ams=AmsEndpoints(
            forecast_url=f"{ams_url}{Channel.FORECAST.path}",
            verification_url=f"{ams_url}{Channel.VERIFICATION.path}",
        ),
        mqtt=mqtt,
        outbox=outbox or RetryPolicy(),
    )
