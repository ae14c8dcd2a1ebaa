"""The one place TLS contexts are made, and the map from a peer certificate to a role.

Both contexts: TLS 1.2 at least (1.3 is negotiated whenever the peer has it), forward-secret
AEAD ciphers only for 1.2, certificate verification always on, our certificate presented
(the client side too: mutual TLS). The server requires a client certificate signed by a
configured CA; the `dev_relax` flag of the config is the only way to accept a client
without one, and it is logged at WARNING each time a context is made.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.errors import TlsSetupError
from gateway.north.config import PeerRule, Role, TlsFiles

log = logging.getLogger(__name__)

# ECDHE for forward secrecy, AEAD only; TLS 1.3 suites are OpenSSL's defaults (all AEAD)
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """Context for our HTTPS server: verifies client certificates against `files.ca`."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, files)
    if files.dev_relax is None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        log.warning(
            "DEVELOPMENT MODE: TLS clients without a certificate are accepted as role %r",
            files.dev_relax.anonymous_role.value,
        )
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """Context for our connections to the AMS or the broker: verifies the server's
    certificate and host name, presents ours."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, files)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _base(protocol: int, files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        for ca in files.ca:
            ctx.load_verify_locations(cafile=str(ca))
        ctx.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"TLS files {files.cert}, {files.key}, CA {files.ca}: {exc}") from exc
    return ctx


@dataclass(frozen=True)
class PeerIdentity:
    """What a verified peer certificate says about its holder."""

    common_name: str | None
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    sha256: str

    @property
    def names(self) -> tuple[str, ...]:
        cn = (self.common_name,) if self.common_name else ()
        return (*cn, *self.dns_names, *self.uris, f"sha256:{self.sha256}")

    def __str__(self) -> str:
        return self.common_name or (self.uris + self.dns_names + (f"sha256:{self.sha256}",))[0]

    @classmethod
    def from_ssl(cls, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerIdentity | None:
        """The identity of the verified peer, or None when it presented no certificate."""
        if ssl_object is None:
            return None
        der = ssl_object.getpeercert(binary_form=True)
        info = ssl_object.getpeercert()
        if not der or not info:
            return None
        return cls.from_cert_info(info, der)

    @classmethod
    def from_cert_info(cls, info: dict[str, Any], der: bytes) -> PeerIdentity:
        common_name = None
        for rdn in info.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    common_name = str(value)
        alt = info.get("subjectAltName", ())
        return cls(
            common_name=common_name,
            dns_names=tuple(str(v) for k, v in alt if k == "DNS"),
            uris=tuple(str(v) for k, v in alt if k == "URI"),
            sha256=hashlib.sha256(der).hexdigest(),
        )


@dataclass(frozen=True)
class Peer:
    """Who sent an inbound message, as far as the transport vouches for it: the verified
    certificate's identity (None when the transport cannot show one), the role the
    allow-list gives it, and the Smart API senders it may sign as (None: any trusted
    signer, only for the development relaxation)."""

    identity: PeerIdentity | None
    role: Role
    senders: frozenset[str] | None
    #: how the transport knows the role, for messages and logs
    via: str = "certificate"

    def may_send_as(self, sender: str) -> bool:
        return self.senders is None or sender in self.senders

    def __str__(self) -> str:
        who = str(self.identity) if self.identity else self.via
        return f"{who} ({self.role.value})"


class AllowList:
    """Certificate identity -> Peer, from the config's `allow:` entries."""

    def __init__(self, rules: tuple[PeerRule, ...], files: TlsFiles) -> None:
        self._rules = {r.subject: r for r in rules}
        self._relax = files.dev_relax

    def replace(self, rules: tuple[PeerRule, ...]) -> None:
        """A reloaded allow-list: the next request is admitted (or not) by it."""
        self._rules = {r.subject: r for r in rules}

    def admit(self, identity: PeerIdentity | None) -> Peer | None:
        """The peer for this certificate, or None when the allow-list does not name it."""
        if identity is None:
            if self._relax is None:
                return None
            return Peer(None, self._relax.anonymous_role, None, via="anonymous client (dev)")
        for name in identity.names:
            rule = self._rules.get(name)
            if rule is not None:
                return Peer(identity, rule.role, frozenset(rule.senders))
        return None

    def role_peer(self, role: Role, via: str) -> Peer:
        """A peer vouched for by role only, e.g. an MQTT publisher on a topic the broker's
        ACL reserves for that role: it may sign as any sender the allow-list gives the role."""
        senders = frozenset(s for r in self._rules.values() if r.role is role for s in r.senders)
        return Peer(None, role, senders, via=via)


# -- what went wrong in a handshake, in words ----------------------------------------------------

#: OpenSSL reasons (ssl.SSLError.reason) -> what they mean for the operator
_REASONS: dict[str, str] = {
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (it answered in plain text)",
    "HTTP_REQUEST": "the peer sent plain HTTP to a TLS port",
    "UNSUPPORTED_PROTOCOL": "the peer offers only a TLS version below 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the peer refused the TLS version (1.2 at least is required)",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version in common (1.2 at least is required)",
    "NO_SHARED_CIPHER": "no cipher suite in common",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer found no TLS version or cipher suite in common",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer refused our certificate: it has expired",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate",
    "UNEXPECTED_EOF_WHILE_READING": (
        "the peer closed the connection in the handshake (not a TLS port, or it refused us)"
    ),
}

#: OpenSSL's verify messages -> plainer words
_VERIFY: dict[str, str] = {
    "unable to get local issuer certificate": "is not signed by a CA we trust",
    "self-signed certificate": "is self-signed, not from a CA we trust",
    "self-signed certificate in certificate chain": "comes from a CA we do not trust",
}


def describe_tls_error(exc: BaseException, peer: str) -> str:
    """What a failed TLS handshake with `peer` ("the AMS", "the broker", "the client") says
    went wrong: the certificate check that failed, the alert the peer sent, or plain
    text where TLS was expected. Falls back to the library's own text."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = str(exc.verify_message or exc.reason or exc).rstrip(".")
        mismatch = re.fullmatch(r"(Hostname|IP address) mismatch, certificate (.*)", what)
        if mismatch:
            what = f"{mismatch.group(2)} (the name we connected to)"
        what = _VERIFY.get(what, what.removeprefix("certificate "))
        return f"TLS: {peer}'s certificate {what}"
    if isinstance(exc, ssl.SSLError):
        return describe_tls_reason(str(exc.reason or exc), peer)
    return f"TLS with {peer}: {exc}"


def describe_tls_reason(reason: str, peer: str) -> str:
    """`describe_tls_error` from OpenSSL's reason code alone (e.g. `UNSUPPORTED_PROTOCOL`),
    for libraries that report the code only in text."""
    return f"TLS with {peer}: {_REASONS.get(reason, reason)}"


def validity_problem(cert: Path, now: datetime | None = None) -> str | None:
    """Why our certificate `cert` will be refused by every peer (expired, not yet valid),
    or None. A peer that refuses a client certificate under TLS 1.3 often just closes the
    connection, so this is the only way to name the cause."""
    try:
        parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError):
        return None  # unreadable files fail the context factory with their own error
    now = now or datetime.now(UTC)
    if parsed.not_valid_after_utc < now:
        return f"our certificate {cert} expired on {parsed.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if parsed.not_valid_before_utc > now:
        return (
            f"our certificate {cert} is not valid before "
            f"{parsed.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    return None
