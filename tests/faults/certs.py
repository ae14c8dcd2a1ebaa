"""Client certificates the northbound endpoints must refuse at the TLS handshake."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.north.certs import KeyPair, _name, _validity, load_issuer, make_ca, write_pair
from tests.support.pki import PkiFiles


def server_only(pki: PkiFiles, common_name: str = "ams") -> KeyPair:
    """A certificate from our own CA for a server (extended key usage serverAuth only),
    named like the AMS: presented as a client certificate it must not pass."""
    ca = load_issuer(pki.ca, pki.dev["ca-key"])
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(30)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def _context(pki: PkiFiles, pair: tuple[Path, Path] | None) -> ssl.SSLContext:
    """A client context that trusts our CA (so only the client side is wrong)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if pair is not None:
        ctx.load_cert_chain(certfile=str(pair[0]), keyfile=str(pair[1]))
    return ctx


def bad_client_certs(pki: PkiFiles, directory: Path) -> dict[str, ssl.SSLContext]:
    """name -> a client TLS context presenting a wrong certificate (or none), plus the
    `intruder` (our CA, no allow-list entry)."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "self-signed": _context(pki, write_pair(directory, "self-signed", make_ca("ams"))),
        "other-ca": _context(pki, pki.stranger),
        "server-only": _context(pki, write_pair(directory, "server-only", server_only(pki))),
        "no-certificate": _context(pki, None),
        "intruder": _context(pki, pki.intruder),
    }
