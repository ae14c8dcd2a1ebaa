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
import ssl
from dataclasses import dataclass
from typing import Any

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
