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
"""

from __future__ import annotations

from dataclasses import dataclass


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
    a stable code (docs/flexibility.md), `detail` names the conflicting service or limit.
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
    `status` the HTTP status of that answer."""

    code = 400
    status = 400

    def __init__(self, message: str) -> None:
        self.detail = message
        super().__init__(message)


class MessageParseError(SmartApiError):
    """The body does not parse as the declared content type."""


class TooManyStatements(SmartApiError):
    """The body holds more RDF statements than the configured limit; parsing stops there, so
    a message padded with triples costs no more memory than the limit allows."""

    code = 413
    status = 413


class UnsupportedMediaType(SmartApiError):
    code = 415
    status = 415


class MessageDecodeError(SmartApiError):
    """The graph parsed but is not a valid message; names the term and the node at fault."""

    code = 422
    status = 422

    def __init__(self, term: str, node: str, message: str) -> None:
        self.term = term
        self.node = node
        super().__init__(f"{message} (term {term}, node {node})")


class MissingTerm(MessageDecodeError):
    """A required term is absent."""


class WrongUnit(MessageDecodeError):
    """A unit is unknown or does not fit the value's quantity kind."""


class WrongDatatype(MessageDecodeError):
    """A literal has the wrong datatype or a lexical form that does not parse."""


class NonFiniteValue(MessageDecodeError):
    """A number is NaN or infinite."""


class InvalidTerm(MessageDecodeError):
    """A term carries a value the profile does not allow."""


class ShapeViolation(SmartApiError):
    """The graph does not conform to the shipped shapes; `violations` lists each finding."""

    code = 422
    status = 422

    def __init__(self, violations: list[str]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(self.violations))


class SecurityError(SmartApiError):
    """A signature, encryption or replay check failed; the message is not applied."""

    code = 401
    status = 401


class SignatureMissing(SecurityError):
    pass


class SignatureInvalid(SecurityError):
    pass


class UntrustedSigner(SecurityError):
    code = 403
    status = 403


class ReplayRejected(SecurityError):
    code = 409
    status = 409


class DecryptionFailed(SecurityError):
    pass


class KeyFileError(SecurityError):
    """A key, certificate or trust file cannot be read (names the file)."""

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
