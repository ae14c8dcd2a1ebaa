"""Every error the gateway raises on purpose, in one tree.

    GatewayError
    ├── ConfigError              a config or mapping file is wrong (carries every Problem found)
    ├── DriverError              something between the gateway and a field device
    │   ├── LinkError            the link is down or timed out; the caller reconnects
    │   │   └── RequestTimeout   one request got no answer within the device timeout
    │   ├── DeviceRejected       the device answered with a refusal (exception, negative confirm)
    │   └── DecodeError          the device answered something that does not decode
    ├── CommandError             a command was refused before anything was sent
    │   ├── UnknownPoint         no such point id
    │   ├── NotWritable          the point is read-only
    │   └── LimitViolation       the value is outside the point's write limits
    ├── RawRangeError            a value does not fit a protocol data type (e.g. 70000 as int16)
    ├── StoreError               the SQLite store failed
    ├── FlexError                a flexibility function could not run
    │   ├── SolverError          the LP solver failed (an infeasible plan is a result, not this)
    │   └── ReserveRefused       a reserve notification or activation was refused (stable reason)
    ├── ServiceError             the service cannot run as installed (listener, token, install)
    │   └── ReloadRefused        a reload changed what only a restart applies, or a part of the
    │                            gateway could not take the new config; nothing was applied
    ├── DiscoveryError           discovery found nothing to draft or the device answered nonsense
    ├── SmartApiError            a Smart API message was refused (carries a Smart API error code)
    │   ├── MessageParseError    the body does not parse as its content type
    │   ├── TooManyStatements    the body holds more RDF statements than a message may
    │   ├── UnsupportedMediaType the content type is not one the codec speaks
    │   ├── MessageDecodeError   the graph parses but is not a valid message (names term and node)
    │   │   ├── MissingTerm      a required term is absent
    │   │   ├── WrongUnit        a unit is unknown or does not fit the quantity kind
    │   │   ├── WrongDatatype    a literal has the wrong datatype or an ill-typed lexical form
    │   │   ├── NonFiniteValue   a number is NaN or infinite
    │   │   └── InvalidTerm      a term has a value the profile does not allow (unknown class,
    │   │                        repeated single value, inconsistent lists or intervals)
    │   ├── ShapeViolation       the graph does not conform to the shipped SHACL shapes
    │   ├── Forbidden            the peer may not read or write this (access endpoint)
    │   ├── NotFound             no such entity, point or quantity (access endpoint)
    │   ├── WriteFailed          a device refused or did not answer a write (access endpoint)
    │   └── SecurityError        signing, encryption or replay checks failed; nothing is applied
    │       ├── SignatureMissing a signature is required and absent
    │       ├── SignatureInvalid the hash or signature does not match (tampered, wrong key)
    │       ├── UntrustedSigner  the signer's key is unknown or not trusted for the sender
    │       ├── ReplayRejected   the message id was seen before or generatedAt is outside the window
    │       ├── DecryptionFailed an encrypted part cannot be decrypted or authenticated
    │       └── KeyFileError     a key, certificate or trust file cannot be read
    └── NorthError               northbound communication with the AMS
        ├── TlsSetupError        a certificate, key or CA file cannot be loaded
        ├── DeliveryError        an outbound message was not accepted (link down, timeout, non-2xx)
        └── InboundRejected      an inbound message failed a pipeline step (HTTP status + reason)

Third-party exceptions are translated into these at one boundary (the driver adapter or the
loader); anything that reaches an operator names the file, device, point or field at fault.

The names peers read are explicit constants, never derived from class names, so renaming a
class changes no documented answer: `Reason` holds every reason code of a refused
northbound message (docs/northbound.md), `RefusalReason` those of the flexibility layer's
`ReserveRefused` (docs/flexibility.md), and each `SmartApiError` class carries its `reason`
and the `error_name` the access endpoint answers with (docs/smartapi-profile.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class Reason(StrEnum):
    """Reason codes of refused inbound northbound messages: the first word of the Smart API
    Error's message (docs/northbound.md lists them with their HTTP status)."""

    # transport (HTTPS server, MQTT admission)
    PEER_NOT_ALLOWED = "peer-not-allowed"
    ROLE_NOT_ALLOWED = "role-not-allowed"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    TIMEOUT = "timeout"
    TOO_LARGE = "too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    # the pipeline
    SENDER_NOT_ALLOWED = "sender-not-allowed"
    WRONG_CHANNEL = "wrong-channel"
    WRONG_MICROGRID = "wrong-microgrid"
    ID_CONFLICT = "id-conflict"
    STALE = "stale"
    APPLY_FAILED = "apply-failed"
    # SmartApiError classes (their `reason`)
    SMART_API_ERROR = "smart-api-error"
    MALFORMED = "malformed"
    TOO_MANY_STATEMENTS = "too-many-statements"
    MESSAGE_DECODE_ERROR = "message-decode-error"
    MISSING_TERM = "missing-term"
    WRONG_UNIT = "wrong-unit"
    WRONG_DATATYPE = "wrong-datatype"
    NON_FINITE_VALUE = "non-finite-value"
    INVALID_TERM = "invalid-term"
    SHAPE_VIOLATION = "shape-violation"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    WRITE_FAILED = "write-failed"
    SECURITY_ERROR = "security-error"
    SIGNATURE_MISSING = "signature-missing"
    SIGNATURE_INVALID = "signature-invalid"
    UNTRUSTED_SIGNER = "untrusted-signer"
    REPLAYED = "replayed"
    DECRYPTION_FAILED = "decryption-failed"
    KEY_FILE_ERROR = "key-file-error"


class RefusalReason(StrEnum):
    """Reason codes of the flexibility layer's `ReserveRefused` (docs/flexibility.md); the
    northbound answer carries them as its reason."""

    CONFLICTS_WITH_RESERVE = "conflicts-with-reserve"
    COUPLING_POINT_LIMIT = "coupling-point-limit"
    INTERNAL_LIMIT = "internal-limit"
    INSUFFICIENT_FLEXIBILITY = "insufficient-flexibility"
    INSUFFICIENT_ENERGY = "insufficient-energy"
    INSUFFICIENT_REACTIVE = "insufficient-reactive"
    OUTSIDE_BAND = "outside-band"
    UNKNOWN_NOTIFICATION = "unknown-notification"
    OUTSIDE_WINDOW = "outside-window"
    CONTROL_FAILED = "control-failed"
    WRONG_MICROGRID = "wrong-microgrid"
    REFUSED = "refused"


class GatewayError(Exception):
    """Base of every error raised by the gateway on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config or mapping file, located as precisely as known."""

    file: str
    message: str
    line: int | None = None
    device: str | None = None
    point: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.device:
            parts.append(f"device {self.device!r}")
        if self.point:
            parts.append(f"point {self.point!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        return ": ".join([", ".join(parts), self.message])


class ConfigError(GatewayError):
    """A config or mapping file is invalid; `problems` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DriverError(GatewayError):
    """Failure talking to a field device; `device` names it."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"device {device!r}: {message}")


class LinkError(DriverError):
    """The link to the device is down or a request timed out; reconnect and retry."""


class RequestTimeout(LinkError):
    """A request got no answer within the device timeout (the link may still be up)."""


class DeviceRejected(DriverError):
    """The device refused a request (e.g. a Modbus exception response)."""


class DecodeError(DriverError):
    """The device's answer could not be decoded."""


class CommandError(GatewayError):
    """A command was refused by the gateway before anything was sent to a device."""

    def __init__(self, point: str, message: str) -> None:
        self.point = point
        super().__init__(f"point {point!r}: {message}")


class UnknownPoint(CommandError):
    """No point with this id is mapped."""


class NotWritable(CommandError):
    """The point's direction does not allow writes."""


class LimitViolation(CommandError):
    """The value lies outside the point's write limits."""


class RawRangeError(GatewayError, ValueError):
    """A value cannot be encoded in a protocol data type; raised by the codecs before
    anything is sent."""


class StoreError(GatewayError):
    """The SQLite store failed."""


class FlexError(GatewayError):
    """A flexibility function (forecast, schedule, control, verification) could not run."""


class SolverError(FlexError):
    """The LP solver failed or gave no usable answer; `problem` names the LP."""

    def __init__(self, problem: str, message: str) -> None:
        self.problem = problem
        super().__init__(f"{problem}: {message}")


class ReserveRefused(FlexError):
    """The flexibility functions refused a Reserve Notification or Activation; `reason` is
    a stable code (a `RefusalReason`, docs/flexibility.md; a third-party handler may use its
    own), `detail` names the conflicting service or limit.
    Nothing of the refused message was kept."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class ServiceError(GatewayError):
    """The service cannot start or be installed as asked (a listener that cannot bind, an
    unreadable token file, an install root that is not usable); the message names it."""


class ReloadRefused(ServiceError):
    """A reload was refused as a whole: `sections` need a restart (empty when a part of the
    gateway could not take the new config, which the message names)."""

    def __init__(self, message: str, sections: tuple[str, ...] = ()) -> None:
        self.sections = sections
        super().__init__(message)


class SmartApiError(GatewayError):
    """A Smart API message was refused. `code` is the Smart API errorCode we answer with and
    `status` the HTTP status of that answer; `reason` is the code a northbound refusal
    names (docs/northbound.md) and `error_name` the name an access endpoint answer gives
    (docs/smartapi-profile.md), both explicit so that renaming a class changes neither."""

    reason: ClassVar[Reason] = Reason.SMART_API_ERROR
    error_name: ClassVar[str] = "SmartApiError"

    code = 400
    status = 400

    def __init__(self, message: str) -> None:
        self.detail = message
        super().__init__(message)


class MessageParseError(SmartApiError):
    """The body does not parse as the declared content type."""

    reason: ClassVar[Reason] = Reason.MALFORMED
    error_name: ClassVar[str] = "MessageParseError"


class TooManyStatements(SmartApiError):
    """The body holds more RDF statements than the configured limit; parsing stops there, so
    a message padded with triples costs no more memory than the limit allows."""

    reason: ClassVar[Reason] = Reason.TOO_MANY_STATEMENTS
    error_name: ClassVar[str] = "TooManyStatements"

    code = 413
    status = 413


class UnsupportedMediaType(SmartApiError):
    reason: ClassVar[Reason] = Reason.UNSUPPORTED_MEDIA_TYPE
    error_name: ClassVar[str] = "UnsupportedMediaType"
    code = 415
    status = 415


class MessageDecodeError(SmartApiError):
    """The graph parsed but is not a valid message; names the term and the node at fault."""

    reason: ClassVar[Reason] = Reason.MESSAGE_DECODE_ERROR
    error_name: ClassVar[str] = "MessageDecodeError"

    code = 422
    status = 422

    def __init__(self, term: str, node: str, message: str) -> None:
        self.term = term
        self.node = node
        super().__init__(f"{message} (term {term}, node {node})")


class MissingTerm(MessageDecodeError):
    """A required term is absent."""

    reason: ClassVar[Reason] = Reason.MISSING_TERM
    error_name: ClassVar[str] = "MissingTerm"


class WrongUnit(MessageDecodeError):
    """A unit is unknown or does not fit the value's quantity kind."""

    reason: ClassVar[Reason] = Reason.WRONG_UNIT
    error_name: ClassVar[str] = "WrongUnit"


class WrongDatatype(MessageDecodeError):
    """A literal has the wrong datatype or a lexical form that does not parse."""

    reason: ClassVar[Reason] = Reason.WRONG_DATATYPE
    error_name: ClassVar[str] = "WrongDatatype"


class NonFiniteValue(MessageDecodeError):
    """A number is NaN or infinite."""

    reason: ClassVar[Reason] = Reason.NON_FINITE_VALUE
    error_name: ClassVar[str] = "NonFiniteValue"


class InvalidTerm(MessageDecodeError):
    """A term carries a value the profile does not allow."""

    reason: ClassVar[Reason] = Reason.INVALID_TERM
    error_name: ClassVar[str] = "InvalidTerm"


class ShapeViolation(SmartApiError):
    """The graph does not conform to the shipped shapes; `violations` lists each finding."""

    reason: ClassVar[Reason] = Reason.SHAPE_VIOLATION
    error_name: ClassVar[str] = "ShapeViolation"

    code = 422
    status = 422

    def __init__(self, violations: list[str]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(self.violations))


class Forbidden(SmartApiError):
    """The peer may not read or write what it asked for (role, point direction)."""

    reason: ClassVar[Reason] = Reason.FORBIDDEN
    error_name: ClassVar[str] = "Forbidden"
    code = 403
    status = 403


class NotFound(SmartApiError):
    """No such entity, point or quantity is served here."""

    reason: ClassVar[Reason] = Reason.NOT_FOUND
    error_name: ClassVar[str] = "NotFound"
    code = 404
    status = 404


class WriteFailed(SmartApiError):
    """A device refused or did not answer a write; the message lists what was applied."""

    reason: ClassVar[Reason] = Reason.WRITE_FAILED
    error_name: ClassVar[str] = "WriteFailed"
    code = 502
    status = 502


class SecurityError(SmartApiError):
    """A signature, encryption or replay check failed; the message is not applied."""

    reason: ClassVar[Reason] = Reason.SECURITY_ERROR
    error_name: ClassVar[str] = "SecurityError"

    code = 401
    status = 401


class SignatureMissing(SecurityError):
    reason: ClassVar[Reason] = Reason.SIGNATURE_MISSING
    error_name: ClassVar[str] = "SignatureMissing"


class SignatureInvalid(SecurityError):
    reason: ClassVar[Reason] = Reason.SIGNATURE_INVALID
    error_name: ClassVar[str] = "SignatureInvalid"


class UntrustedSigner(SecurityError):
    reason: ClassVar[Reason] = Reason.UNTRUSTED_SIGNER
    error_name: ClassVar[str] = "UntrustedSigner"
    code = 403
    status = 403


class ReplayRejected(SecurityError):
    reason: ClassVar[Reason] = Reason.REPLAYED
    error_name: ClassVar[str] = "ReplayRejected"
    code = 409
    status = 409


class DecryptionFailed(SecurityError):
    reason: ClassVar[Reason] = Reason.DECRYPTION_FAILED
    error_name: ClassVar[str] = "DecryptionFailed"


class KeyFileError(SecurityError):
    """A key, certificate or trust file cannot be read (names the file)."""

    reason: ClassVar[Reason] = Reason.KEY_FILE_ERROR
    error_name: ClassVar[str] = "KeyFileError"

    code = 500
    status = 500


class NorthError(GatewayError):
    """Northbound communication with the aggregator (AMS) failed."""


class TlsSetupError(NorthError):
    """A certificate, key or CA file cannot be loaded."""


class DeliveryError(NorthError):
    """An outbound message was not accepted; the outbox retries it.

    `permanent` is set when the peer refused the message itself (4xx other than 408/429):
    it is still retried, since the AMS may be fixed, but the log says so at ERROR.
    """

    def __init__(self, destination: str, message: str, *, permanent: bool = False) -> None:
        self.destination = destination
        self.permanent = permanent
        super().__init__(f"{destination}: {message}")


class InboundRejected(NorthError):
    """An inbound message failed one step of the pipeline; nothing of it was applied.

    `status` is the HTTP status answered, `reason` a stable code (docs/northbound.md),
    `message_id` the message's id when it was read that far.
    """

    def __init__(
        self, status: int, reason: str, message: str, *, message_id: str | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.message_id = message_id
        self.detail = message
        where = f"message {message_id}: " if message_id else ""
        super().__init__(f"{where}{reason}: {message}")


class DiscoveryError(GatewayError):
    """Discovery could not draft a mapping: nothing answers, no model found, or the device
    answered something that contradicts its own description (names unit and address)."""
