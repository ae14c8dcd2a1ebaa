"""The `north:` section of the gateway config: how the gateway talks to the aggregator (AMS).

Relative paths are relative to the config file; `NorthConfig.resolved(base)` makes them
absolute (the service does this once at start with the config file's directory).

Example::

    north:
      transport: https            # or mqtt
      identity: https://mgms.example/demo-microgrid   # our Smart API sender (generatedBy)
      tls:
        ca: [certs/ca.pem]
        cert: certs/gateway.pem
        key: certs/gateway.key
      signing:
        key: certs/gateway-signing.key
        key_id: gateway-1
        trust: certs/trust-gateway.yaml
      allow:                      # certificate subject -> role (and Smart API senders)
        - subject: ams
          role: ams
          senders: [https://ams.example/ams]
      server: {host: 127.0.0.1, port: 8443}
      ams:                        # absent: no AMS; the access endpoint is still served
        forecast_url: https://127.0.0.1:9443/smartapi/forecast
        verification_url: https://127.0.0.1:9443/smartapi/verification
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.smartapi.peers import Dialect, PeerProfile, Profiles

_HOUR_S = 3600.0


class Role(enum.StrEnum):
    """What a peer may do; given by the allow-list to a certificate subject."""

    AMS = "ams"  # the aggregator: sends notifications and activations, reads state
    OPERATOR = "operator"  # the microgrid operator: reads and writes through the access endpoint
    MGMS = "mgms"  # a gateway, as the AMS (simulator) sees it: sends forecasts, verifications


class PeerRule(BaseModel):
    """One allow-list entry: a certificate that matches `subject` gets `role`.

    `subject` matches the certificate's subject common name, one of its subjectAltName DNS
    names or URIs, or its SHA-256 fingerprint written `sha256:<hex>`. `senders` lists the
    Smart API identities (`generatedBy`) this peer may sign messages as; a message whose
    sender is not listed is refused even when its signature is good.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(min_length=1)
    role: Role
    senders: tuple[str, ...] = ()
    #: the Smart API dialect of the peer: `modern` (this product's profile) or
    #: `smartapi-1.1` (the published 1.1 library; gateway.smartapi.interop says what
    #: changes, inbound and outbound)
    profile: Dialect = Dialect.MODERN
    #: the time zone a 1.1 peer's clock runs in: its naive times are read in it
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _profile(self) -> PeerRule:
        PeerProfile(self.profile, self.timezone)  # an unknown zone fails here
        if self.profile is Dialect.SMARTAPI_11 and not self.senders:
            raise ValueError(
                f"allow-list entry {self.subject!r}: profile smartapi-1.1 needs the peer's "
                "`senders` (its messages are recognized by their generatedBy)"
            )
        return self


class DevRelax(BaseModel):
    """Development only, logged at WARNING on every start: accept clients without a
    certificate and give them `anonymous_role` (their messages must still be signed by a
    trusted sender)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anonymous_role: Role


class TlsFiles(BaseModel):
    """Our certificate and key, and the CAs we trust for peers (both directions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: tuple[Path, ...] = Field(min_length=1)
    cert: Path
    key: Path
    #: the only way to relax mutual TLS; absent in production
    dev_relax: DevRelax | None = None

    def resolved(self, base: Path) -> TlsFiles:
        return self.model_copy(
            update={
                "ca": tuple(_under(base, p) for p in self.ca),
                "cert": _under(base, self.cert),
                "key": _under(base, self.key),
            }
        )


class SigningKeys(BaseModel):
    """Smart API message security (gateway.smartapi.security): our signing key, and the
    peers whose signatures we trust (a trust file: key id, sender, public key, roles)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: PEM private key (Ed25519, ECDSA P-256 or RSA); signs everything we send
    key: Path
    #: the key id our signatures name (the peer's trust file lists it with our public key)
    key_id: str = Field(min_length=1)
    #: trusted peers, see gateway/smartapi/security/keys.py for the format
    trust: Path
    #: refuse unsigned inbound messages (only a development setup turns this off)
    require_signature: bool = True
    #: an inbound message generated longer ago (or ahead) than this is refused as stale
    replay_window_s: float = Field(default=300.0, gt=0)
    #: accept the Smart API 1.1 multipart signing scheme inbound
    accept_legacy: bool = True

    def resolved(self, base: Path) -> SigningKeys:
        return self.model_copy(
            update={"key": _under(base, self.key), "trust": _under(base, self.trust)}
        )


class ServerConfig(BaseModel):
    """The HTTPS server the AMS posts notifications and activations to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    #: larger request bodies are refused with 413 before they are read
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    #: RDF statements an inbound message may hold (HTTPS, MQTT, access); parsing stops at
    #: the first beyond with 413. A notification holds at most 13 per interval: a day of
    #: 15-minute intervals about 1,400, of 1-minute intervals about 18,800. Each statement
    #: costs about 1.4 kB of memory while its message is checked.
    max_statements: int = Field(default=20_000, gt=0)
    #: seconds a request may take from its first byte to the answer
    request_timeout_s: float = Field(default=10.0, gt=0)
    #: seconds from a request's first byte until its headers are complete
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: seconds a connection may wait for its (next) request before it is closed
    idle_timeout_s: float = Field(default=30.0, gt=0)
    #: open connections at most (TLS handshakes included); at the cap a new connection
    #: drops the one waiting longest unserved. systemd/mgms-gateway.service's LimitNOFILE
    #: is sized for it
    max_connections: int = Field(default=512, ge=1, le=4096)
    #: open connections one client certificate may hold
    max_connections_per_peer: int = Field(default=64, ge=1)


class Timeouts(BaseModel):
    """Per-phase client timeouts in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: TCP connect plus TLS handshake
    connect_s: float = Field(default=5.0, gt=0)
    #: between two reads of the answer
    read_s: float = Field(default=10.0, gt=0)
    #: the whole exchange
    total_s: float = Field(default=30.0, gt=0)


class AmsEndpoints(BaseModel):
    """Where the gateway sends Flexibility Forecasts and Reserve Verifications over HTTPS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forecast_url: AnyHttpUrl
    verification_url: AnyHttpUrl
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @field_validator("forecast_url", "verification_url")
    @classmethod
    def _https_only(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.scheme != "https":
            raise ValueError(f"{url} must be https")
        return url


class MqttConfig(BaseModel):
    """The broker for the MQTT transport (TLS with our client certificate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8883, ge=1, le=65535)
    #: default: mgms-<microgrid id>; stable, so the broker keeps our session
    client_id: str | None = None
    #: first topic level; see docs/northbound.md for the scheme
    topic_root: str = Field(default="smartapi", pattern=r"^[^#+/]+$")
    keepalive_s: int = Field(default=30, ge=5)
    #: session kept by the broker while we are offline (QoS 1 messages are queued)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: a request unanswered this long is a failed delivery (the outbox retries it); an
    #: answer can be lost without a disconnect of ours, e.g. when the broker restarted
    #: without the peer's session
    answer_timeout_s: float = Field(default=30.0, gt=0)


class RetryPolicy(BaseModel):
    """Outbox retries: capped exponential backoff, for at least an hour by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_s: float = Field(default=1.0, gt=0)
    max_s: float = Field(default=60.0, gt=0)
    factor: float = Field(default=2.0, ge=1.0)
    #: a message not delivered this long after it was queued is given up (kept, marked expired)
    give_up_after_s: float = Field(default=24 * _HOUR_S, ge=_HOUR_S)
    #: delivered and expired messages are kept this long for audit and duplicate detection
    keep_done_s: float = Field(default=7 * 24 * _HOUR_S, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.initial_s > self.max_s:
            raise ValueError(f"initial_s {self.initial_s} is greater than max_s {self.max_s}")
        return self

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1-based)."""
        exponent = max(attempts - 1, 0)
        # cap the exponent so the float never overflows on a long outage
        return min(self.initial_s * self.factor ** min(exponent, 64), self.max_s)


class NorthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["https", "mqtt"] = "https"
    #: our Smart API identity, the `generatedBy` of every message we send
    identity: str = Field(min_length=1)
    tls: TlsFiles
    signing: SigningKeys
    allow: tuple[PeerRule, ...] = Field(min_length=1)
    server: ServerConfig = Field(default_factory=ServerConfig)
    #: where forecasts and verifications go over HTTPS; absent (a site without an AMS, e.g.
    #: one that only serves the access endpoint to operators): nothing is sent or queued
    ams: AmsEndpoints | None = None
    mqtt: MqttConfig | None = None
    outbox: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _transport_configured(self) -> NorthConfig:
        if self.transport == "mqtt" and self.mqtt is None:
            raise ValueError("transport mqtt needs an `mqtt:` section with the broker")
        subjects = [r.subject for r in self.allow]
        dupes = sorted({s for s in subjects if subjects.count(s) > 1})
        if dupes:
            raise ValueError(f"allow-list names a subject twice: {', '.join(dupes)}")
        if len({r.profile for r in self.allow if r.role is Role.AMS}) > 1:
            # forecasts and verifications go to the AMS in one profile
            raise ValueError("the allow-list's AMS entries disagree on the profile")
        return self

    def profiles(self) -> Profiles:
        """The Smart API profile of every sender the allow-list names."""
        return Profiles(
            {
                sender: PeerProfile(rule.profile, rule.timezone)
                for rule in self.allow
                for sender in rule.senders
            }
        )

    def ams_profile(self) -> PeerProfile:
        """The profile forecasts and verifications are sent in: the AMS entry's."""
        rules = [r for r in self.allow if r.role is Role.AMS]  # one profile: validated
        return PeerProfile(rules[0].profile, rules[0].timezone) if rules else PeerProfile()

    def resolved(self, base: Path) -> NorthConfig:
        """This config with every relative file path made absolute against `base`."""
        return self.model_copy(
            update={"tls": self.tls.resolved(base), "signing": self.signing.resolved(base)}
        )


def _under(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()
