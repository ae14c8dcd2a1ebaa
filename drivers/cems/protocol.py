"""CEMS addressing and options: a customer energy management system over HTTPS.

Two forms, told apart by the address. Smart API form: `<entity IRI> QuantityKind [unit]`,
e.g. `<https://cems.example/der/hp1> ActivePower KiloW`: the value object of that quantity
kind (and unit, when given) of that entity; one poll sends one Smart API Read request per
entity to `options.smartapi_path`, and a write is a Smart API Write of that value object.

REST form: a point's address is `path#pointer`: the path of a JSON resource on the CEMS (from `/`,
with an optional query) and an RFC 6901 JSON pointer to the value in it, e.g.
`/api/v1/building#/load/active_power_kw`. One poll GETs each path once, however many
points it holds. A writable point is written by sending the path's write template (method
and JSON body, `options.writes`) with the raw value put at the point's pointer; a path
without a template is written with PUT and a body holding just that value.

Unit and scaling come from the mapping (`unit`, `scale`, `offset`), as for every protocol.
The link is HTTP/1.1 over TLS with server verification always on (`ca_file`, else the
system's trust store), an optional client certificate and an optional bearer token read
from a file. Relative file names resolve against the mapping file.

Smart API form: `profile` says which Smart API the CEMS speaks (`modern`, or `smartapi-1.1`
for a CEMS built on the published 1.1 library, read and written through the gateway's
per-peer profile, gateway.smartapi.interop); `signing` signs the requests with the
gateway's key and verifies the CEMS's answers against a trust file (security.py);
`peer_sender` is the CEMS's own Smart API identity, and an answer or notification from
any other sender is refused.

With `push`, the gateway also listens for the CEMS's Smart API Notifications (push.py).
This module imports no HTTP library: it is loaded whenever a mapping is read.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonpointer import JsonPointer, JsonPointerException
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator

from gateway.errors import KeyFileError
from gateway.protocols.base import (
    Address,
    AddressError,
    DeviceIssue,
    PointTyping,
    ProtocolSpec,
    read_first_line,
)
from gateway.smartapi.messages import check_iri
from gateway.smartapi.peers import Dialect, PeerProfile
from gateway.smartapi.security.keys import PS256, Identity, TrustStore, algorithm_of
from gateway.smartapi.vocab import QuantityKind, unit_fits

if TYPE_CHECKING:
    from gateway.connection import Connection

#: the most a response body may hold unless the options say otherwise
DEFAULT_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class RestAddress(Address):
    path: str
    pointer: str

    @property
    def json_pointer(self) -> JsonPointer:
        return JsonPointer(self.pointer)

    def put(self, document: dict[str, Any], value: Any) -> None:
        """Set the value at the pointer, making the objects on the way (a write body, or
        the simulator's answer)."""
        *parents, last = self.json_pointer.parts
        node: Any = document
        for part in parents:
            if isinstance(node, list):
                node = node[int(part)]
                continue
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ValueError(f"{self}: {part!r} holds a {type(node).__name__}, not an object")
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    def conflicts_with(self, other: Address) -> bool:
        return isinstance(other, RestAddress) and (self.path, self.pointer) == (
            other.path,
            other.pointer,
        )

    def __str__(self) -> str:
        return f"{self.path}#{self.pointer}"


@dataclass(frozen=True)
class SmartApiAddress(Address):
    entity: str
    quantity: QuantityKind
    unit: str | None = None

    def conflicts_with(self, other: Address) -> bool:
        return other == self

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"<{self.entity}> {self.quantity.value}{unit}"


def parse(text: str, typing: PointTyping[Any]) -> RestAddress | SmartApiAddress:
    if typing.type is not None:
        raise AddressError("type", "cems points take their type from the answer")
    if text.strip().startswith("<"):
        return _parse_smartapi(text)
    return _parse_rest(text)


def _parse_smartapi(text: str) -> SmartApiAddress:
    parts = text.split()
    if not 2 <= len(parts) <= 3 or not (parts[0].startswith("<") and parts[0].endswith(">")):
        raise AddressError(
            "address", f"cems Smart API address {text!r} must be '<entity IRI> QuantityKind [unit]'"
        )
    entity = parts[0][1:-1]
    try:
        check_iri("entity", entity)
        kind = QuantityKind(parts[1])
    except ValueError as exc:
        kinds = ", ".join(k.value for k in QuantityKind)
        raise AddressError("address", f"cems Smart API address {text!r}: {exc} ({kinds})") from None
    unit = parts[2] if len(parts) == 3 else None
    if unit is not None and not unit_fits(kind, unit):
        raise AddressError("address", f"unit {unit} does not fit quantity kind {kind.value}")
    return SmartApiAddress(entity, kind, unit)


def _parse_rest(text: str) -> RestAddress:
    path, sep, pointer = text.strip().partition("#")
    if not sep:
        raise AddressError("address", f"cems address {text!r} must be 'path#/json/pointer'")
    if not path.startswith("/") or path.startswith("//"):
        raise AddressError("address", f"cems path {path!r} must start with one '/'")
    if any(c.isspace() for c in path):
        raise AddressError("address", f"cems path {path!r} contains white space")
    try:
        JsonPointer(pointer)
    except JsonPointerException as exc:
        raise AddressError("address", f"cems JSON pointer {pointer!r}: {exc}") from None
    if not pointer:
        raise AddressError("address", "cems JSON pointer is empty: it must name a member")
    return RestAddress(path, pointer)


class WriteMethod(enum.StrEnum):
    PUT = "PUT"
    POST = "POST"
    PATCH = "PATCH"


class WriteTemplate(BaseModel):
    """How a path is written: the method and the JSON body the value is put into."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: WriteMethod = WriteMethod.PUT
    body: dict[str, Any] = Field(default_factory=dict)


class SmartApiSigning(BaseModel):
    """Signed Smart API messages: ours signed with `key_file` (RSA for a 1.1 peer), the
    peer's verified with the keys `trust_file` lists for its sender (gateway.smartapi.
    security.keys describes the file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key_file: Path
    key_id: str = Field(min_length=1)
    trust_file: Path
    #: refuse an unsigned answer or notification (off only for a peer that signs nothing)
    require_signature: bool = True


class SimulatorPush(BaseModel):
    """The simulated CEMS notifies the gateway's push endpoint (`options.push`) when the
    value of a readable Smart API point changes (fwsim only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the simulator's client certificate and key, and the CA of the gateway's certificate
    cert_file: Path
    key_file: Path
    ca_file: Path
    #: the smallest change of a raw value that is notified
    min_change: float = Field(default=0.0, ge=0)


class SimulatorTls(BaseModel):
    """The simulator's side of the link (fwsim only; the gateway never reads it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cert_file: Path
    key_file: Path
    #: require client certificates signed by this CA
    client_ca_file: Path | None = None
    #: the simulated CEMS's own keys: it signs its answers and verifies the gateway's
    signing: SmartApiSigning | None = None
    push: SimulatorPush | None = None


class PushEndpoint(BaseModel):
    """Where the gateway listens for the CEMS's Smart API Notifications (optional push):
    HTTPS with the gateway's certificate, CEMS clients authenticated by certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    port: int = Field(ge=1, le=65535)
    path: str = Field(default="/smartapi/v1.0e1.0/notification/", pattern=r"^/\S*$")
    cert_file: Path
    key_file: Path
    #: the CA the CEMS's client certificate must chain to
    client_ca_file: Path


class CemsOptions(BaseModel):
    """Device options for a CEMS over HTTPS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: CA bundle the CEMS's certificate must chain to (None: the system's trust store)
    ca_file: Path | None = None
    #: host name the certificate must carry (None: the connection's host)
    server_name: str | None = None
    #: client certificate and key, for a CEMS that asks for one
    cert_file: Path | None = None
    key_file: Path | None = None
    #: file whose first line is a bearer token sent with every request
    token_file: Path | None = None
    #: the largest response body accepted, bytes
    max_body: int = Field(default=DEFAULT_MAX_BODY, ge=1024, le=64 << 20)
    #: where Smart API requests go (Smart API form)
    smartapi_path: str = Field(default="/smartapi/v1.0e1.0/access/", pattern=r"^/\S*$")
    #: the sender IRI of the gateway's Smart API requests
    smartapi_sender: str = "https://mgms.example/gateway"
    #: the Smart API the CEMS speaks
    profile: Dialect = Dialect.MODERN
    #: the zone a 1.1 CEMS's naive times are in (IANA name)
    timezone: str = "UTC"
    #: the CEMS's Smart API identity (generatedBy); other senders are refused
    peer_sender: str | None = None
    #: sign requests, verify answers and notifications (Smart API form)
    signing: SmartApiSigning | None = None
    #: path -> how it is written (see the module docstring)
    writes: dict[str, WriteTemplate] = Field(default_factory=dict)
    #: receive Smart API Notifications from the CEMS (None: polling only)
    push: PushEndpoint | None = None
    simulator: SimulatorTls | None = None

    _base: Path = PrivateAttr(default=Path("."))
    _token: str | None = PrivateAttr(default=None)
    _peer: PeerProfile = PrivateAttr(default=PeerProfile())

    @model_validator(mode="after")
    def _files(self, info: ValidationInfo) -> CemsOptions:
        self._base = Path((info.context or {}).get("base_dir", "."))
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file come together (a client certificate)")
        for path in self.writes:
            if not path.startswith("/"):
                raise ValueError(f"writes: path {path!r} must start with '/'")
        if self.token_file is not None:
            self._token = _read_token(self.resolve(self.token_file))
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        if self.push is not None:
            named |= {
                "push.cert_file": self.push.cert_file,
                "push.key_file": self.push.key_file,
                "push.client_ca_file": self.push.client_ca_file,
            }
        for field, file in named.items():
            if file is not None and not self.resolve(file).is_file():
                raise ValueError(f"{field} {str(self.resolve(file))!r} is not a readable file")
        try:
            self._peer = PeerProfile(self.profile, self.timezone)
        except ValueError as exc:
            raise ValueError(f"timezone: {exc}") from None
        if self.peer_sender is not None:
            check_iri("peer_sender", self.peer_sender)
        if self.push is not None and self.peer_sender is None:
            raise ValueError("push needs peer_sender: the CEMS whose notifications are taken")
        if self.simulator is not None and self.simulator.push is not None and self.push is None:
            raise ValueError("simulator.push needs push: the gateway endpoint it notifies")
        # a key or trust file that is unusable fails here, naming the option
        if self.signing is not None:
            self.keys(self.signing, self.smartapi_sender, "signing")
        if self.simulator is not None and self.simulator.signing is not None:
            self.keys(self.simulator.signing, self.peer_sender or "", "simulator.signing")
        return self

    def keys(
        self, signing: SmartApiSigning, sender: str, where: str
    ) -> tuple[Identity, TrustStore]:
        """Our identity (signing as `sender`) and the trusted peers; ValueError naming the
        option and the file when one is unusable."""
        try:
            identity = Identity.from_file(signing.key_id, sender, self.resolve(signing.key_file))
            trust = TrustStore.from_file(self.resolve(signing.trust_file))
        except KeyFileError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if self.profile is Dialect.SMARTAPI_11 and algorithm_of(identity.key) != PS256:
            raise ValueError(
                f"{where}: {signing.key_file} is not an RSA key: a smartapi-1.1 CEMS verifies"
                " RSA PKCS#1 v1.5 signatures only"
            )
        return identity, trust

    @property
    def peer(self) -> PeerProfile:
        """The CEMS's Smart API profile (dialect and the zone of its naive times)."""
        return self._peer

    def resolve(self, path: Path) -> Path:
        """A file named in the options, relative to the mapping file."""
        return path if path.is_absolute() else self._base / path

    @property
    def base_dir(self) -> Path:
        return self._base

    @property
    def token(self) -> str | None:
        return self._token

    def template(self, path: str) -> WriteTemplate:
        return self.writes.get(path, WriteTemplate())


def _read_token(path: Path) -> str:
    token = read_first_line(path, "token_file")
    if not token.isprintable() or " " in token:
        raise ValueError(f"token_file {str(path)!r}: first line must be one printable token")
    return token


def check_device(connection: Connection, addresses: Mapping[str, Address]) -> list[DeviceIssue]:
    """A CEMS is reached over the network, not a serial line."""
    if connection.host is None:
        return [DeviceIssue("connection.host", "a CEMS is reached over HTTPS: give host")]
    return []


SPEC = ProtocolSpec(
    name="cems",
    driver="drivers.cems.driver:CemsDriver",
    front_end="drivers.cems.simulator:CemsFrontEnd",
    parse_address=parse,
    options_model=CemsOptions,
    data_types=frozenset(),
    default_port=443,
    check_device=check_device,
)
