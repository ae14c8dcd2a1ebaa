"""One blocking DLMS/COSEM association over TCP with WRAPPER framing (IEC 62056-47).

gurux-dlms builds and parses the APDUs; this module owns the socket. Every gurux call and
every socket call of a driver runs here, on the driver's own worker thread, and every
gurux exception is translated here into the gateway's errors (the one boundary):

- the link fails or times out              -> LinkError
- an answer is not a WRAPPER frame         -> LinkError (the stream is out of step)
- the meter refuses the association        -> DeviceRejected (naming the likely cause)
- the meter refuses one attribute/method   -> `Refused` outcome (not an exception)
- an answer does not decode                -> DecodeError

Secrets (password, keys) go into the gurux client and nowhere else.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXReplyData
from gurux_dlms.enums import (
    Authentication as GxAuthentication,
)
from gurux_dlms.enums import (
    Conformance,
    DataType,
    ErrorCode,
    InterfaceType,
    ObjectType,
    Security,
    SourceDiagnostic,
)
from gurux_dlms.GXDLMSConfirmedServiceError import GXDLMSConfirmedServiceError
from gurux_dlms.GXDLMSException import GXDLMSException
from gurux_dlms.GXDLMSExceptionResponse import GXDLMSExceptionResponse
from gurux_dlms.objects import GXDLMSObject, GXDLMSProfileGeneric
from gurux_dlms.secure import GXDLMSSecureClient

from gateway.errors import DecodeError, DeviceRejected, LinkError
from gateway.protocols.dlms import Authentication, CosemClass, DlmsAddress, DlmsOptions, Kind, Obis

_WRAPPER_VERSION = 1
_HEADER = struct.Struct(">HHHH")  # version, source wPort, destination wPort, length
_MAX_PDU = 0xFFFF
_ERROR_TEXT = {
    ErrorCode.HARDWARE_FAULT: "hardware fault",
    ErrorCode.TEMPORARY_FAILURE: "temporary failure",
    ErrorCode.READ_WRITE_DENIED: "access denied",
    ErrorCode.UNDEFINED_OBJECT: "undefined object",
    ErrorCode.INCONSISTENT_CLASS: "inconsistent class",
    ErrorCode.UNAVAILABLE_OBJECT: "object unavailable",
    ErrorCode.UNMATCHED_TYPE: "type unmatched",
    ErrorCode.ACCESS_VIOLATED: "scope of access violated",
    ErrorCode.OTHER_REASON: "other reason",
}
_AUTH = {
    Authentication.NONE: GxAuthentication.NONE,
    Authentication.LOW: GxAuthentication.LOW,
    Authentication.HIGH: GxAuthentication.HIGH_GMAC,
}
_DIAGNOSTIC_TEXT = {
    SourceDiagnostic.AUTHENTICATION_FAILURE: "authentication failure (wrong password?)",
    SourceDiagnostic.NOT_RECOGNISED: "the meter does not accept this authentication level",
    SourceDiagnostic.MECHANISM_NAME_REGUIRED: "the meter requires authentication",
    SourceDiagnostic.NOT_SUPPORTED: (
        "application context not supported (ciphering configured on one side only?)"
    ),
    SourceDiagnostic.NO_REASON_GIVEN: "no reason given (wrong encryption key?)",
}


@dataclass(frozen=True, slots=True)
class Got:
    """A value the meter returned; `data_type` is the DLMS type tag when known."""

    value: Any
    data_type: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The meter answered with a data-access-result other than success."""

    code: int

    @property
    def text(self) -> str:
        try:
            return _ERROR_TEXT.get(ErrorCode(self.code), f"error {self.code}")
        except ValueError:
            return f"error {self.code}"


@dataclass(frozen=True, slots=True)
class Failed:
    """The meter refused the whole request or its answer did not decode."""

    text: str


Outcome = Got | Refused | Failed


@dataclass(frozen=True, slots=True)
class CaptureObject:
    class_id: int
    obis: Obis
    attribute: int
    data_index: int


def quiet_gurux() -> None:
    """gurux-dlms 1.0.203 print()s "Encryption is applied." and "Authentication is
    applied." to stdout for every ciphered message it decrypts (GXDLMSChippering). The
    gateway's stdout is a service log and `mgms demo --json` output: silence that module's
    print. Idempotent."""
    module: Any = importlib.import_module("gurux_dlms.GXDLMSChippering")
    module.print = _quiet


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    return None


def _aware(value: Any) -> datetime | None:
    """A gurux date-time (or its octet string) as an aware datetime; None if unset."""
    if isinstance(value, bytes | bytearray):
        try:
            value = GXDLMSClient.changeType(value, DataType.DATETIME)
        except Exception:  # not a date-time octet string: the caller reports the raw value  # noqa: BLE001
            return None
    if isinstance(value, GXDateTime):
        value = value.value
    if not isinstance(value, datetime):
        return None
    # gurux attaches its own tzinfo class: normalize to UTC
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Session:
    """A blocking association with one meter; not thread-safe (one worker thread)."""

    def __init__(
        self,
        device: str,
        host: str,
        port: int,
        options: DlmsOptions,
        timeout: float,
        invocation_counter: int = 1,
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.options = options
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._client = self._build_client(options)
        if options.authentication is Authentication.HIGH:
            # suite 0 nonces must never repeat under one key: carry the counter over
            self._client.ciphering.invocationCounter = invocation_counter
        self._objects: dict[tuple[int, Obis], GXDLMSObject] = {}
        self._profiles: dict[Obis, GXDLMSProfileGeneric] = {}

    @staticmethod
    def _build_client(options: DlmsOptions) -> GXDLMSSecureClient:
        quiet_gurux()
        secrets = options.secrets
        password = secrets.password.get_secret_value() if secrets.password else None
        client = GXDLMSSecureClient(
            True,
            options.client_address,
            options.server_address,
            _AUTH[options.authentication],
            password,
            InterfaceType.WRAPPER,
        )
        client.maxReceivePDUSize = _MAX_PDU
        if options.authentication is Authentication.HIGH:
            assert secrets.block_cipher_key is not None
            assert secrets.authentication_key is not None
            cipher = client.ciphering
            cipher.security = Security.AUTHENTICATION_ENCRYPTION
            cipher.systemTitle = bytearray(options.system_title_bytes)
            cipher.blockCipherKey = bytearray(secrets.block_cipher_key.get_secret_value())
            cipher.authenticationKey = bytearray(secrets.authentication_key.get_secret_value())
        return client

    # --- link ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and associate (AARQ/AARE, then the HLS pass 3/4 when required)."""
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise LinkError(
                self.device, f"cannot connect to {self.host}:{self.port}: {exc}"
            ) from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            reply = self._exchange(self._client.aarqRequest())
            self._client.parseAareResponse(reply.data)
        except GXDLMSException as exc:
            self.close()
            raise DeviceRejected(self.device, f"association rejected: {_diagnostic(exc)}") from None
        except LinkError:
            self.close()
            raise
        except Exception as exc:  # anything else gurux raises: the AARE did not decode  # noqa: BLE001
            self.close()
            raise DecodeError(self.device, f"association answer did not decode: {exc}") from None
        if self._client.getIsAuthenticationRequired():
            self._authenticate()

    def _authenticate(self) -> None:
        try:
            reply = self._exchange(self._client.getApplicationAssociationRequest())
            self._client.parseApplicationAssociationResponse(reply.data)
        except LinkError:
            self.close()
            raise
        except Exception:  # gurux raises any type for a refused authentication  # noqa: BLE001
            self.close()
            raise DeviceRejected(
                self.device,
                "HLS-GMAC authentication failed: the meter did not accept the challenge "
                "response (wrong authentication or encryption key?)",
            ) from None

    def abort(self) -> None:
        """Break a blocked exchange from another thread; the session is dead afterwards."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Release the association if possible and close the socket; never raises."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.settimeout(min(self.timeout, 1.0))
            for frame in self._client.releaseRequest() or []:
                sock.sendall(bytes(frame))
                self._receive_frame(sock)
        except Exception:  # a meter that does not answer the release is closed anyway  # noqa: BLE001
            pass
        finally:
            sock.close()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    @property
    def invocation_counter(self) -> int:
        """The next invocation counter of the ciphered association (HLS)."""
        return int(self._client.ciphering.invocationCounter)

    # --- services -----------------------------------------------------------------------

    def get(self, addresses: Sequence[DlmsAddress]) -> list[Outcome]:
        """Read attributes; several per request (GET-with-list) when the meter allows it.
        A list the meter answers with any error is read again one by one, so every
        attribute gets its own outcome."""
        if len(addresses) > 1 and self._client.negotiatedConformance & (
            Conformance.MULTIPLE_REFERENCES
        ):
            values = self._get_list(addresses)
            if values is not None:
                return [Got(_convert(a, v)) for a, v in zip(addresses, values, strict=True)]
        return [self._get_one(a) for a in addresses]

    def _get_list(self, addresses: Sequence[DlmsAddress]) -> list[Any] | None:
        pairs = [(self._object(a.class_id, a.obis), a.attribute) for a in addresses]
        values: list[Any] = []
        for message in self._client.readList(pairs):
            try:
                reply = self._exchange(message)
            except (DeviceRejected, DecodeError):
                return None
            if reply.error or not isinstance(reply.value, list):
                return None
            values.extend(reply.value)
        if len(values) != len(addresses) or any(v is None for v in values):
            return None
        return values

    def _get_one(self, address: DlmsAddress) -> Outcome:
        """One attribute; LinkError is the only exception."""
        assert address.attribute is not None
        obj = self._object(address.class_id, address.obis)
        try:
            reply = self._exchange(self._client.read(obj, address.attribute))
            if reply.error:
                return Refused(reply.error)
            return Got(_convert(address, reply.value), reply.valueType)
        except (DeviceRejected, DecodeError) as exc:
            return Failed(str(exc))

    read = _get_one

    def set(self, address: DlmsAddress, value: Any, data_type: int) -> Outcome:
        assert address.attribute is not None
        obj = self._object(address.class_id, address.obis)
        obj.setDataType(address.attribute, DataType(data_type))
        try:
            self._client.updateValue(obj, address.attribute, value)
        except Exception as exc:  # gurux raises any type for an unencodable value  # noqa: BLE001
            raise DecodeError(
                self.device, f"{address}: value {value!r} not encodable: {exc}"
            ) from None
        reply = self._exchange(self._client.write(obj, address.attribute))
        return Refused(reply.error) if reply.error else Got(value, data_type)

    def action(self, address: DlmsAddress, parameter: int, data_type: int) -> Outcome:
        assert address.method is not None
        obj = self._object(address.class_id, address.obis)
        reply = self._exchange(
            self._client.method(obj, address.method, parameter, DataType(data_type))
        )
        return Refused(reply.error) if reply.error else Got(reply.value)

    def capture_objects(self, profile: Obis) -> list[CaptureObject]:
        """The columns of a load profile (attribute 3), cached for the association."""
        pg = self._profile(profile)
        reply = self._exchange(self._client.read(pg, 3))
        if reply.error:
            raise DeviceRejected(
                self.device,
                f"profile {profile}: capture objects refused: {Refused(reply.error).text}",
            )
        try:
            self._client.updateValue(pg, 3, reply.value)
        except Exception as exc:  # gurux raises any type for a bad capture list  # noqa: BLE001
            raise DecodeError(self.device, f"profile {profile}: capture objects: {exc}") from None
        return [
            CaptureObject(
                int(obj.objectType), Obis.parse(obj.logicalName), co.attributeIndex, co.dataIndex
            )
            for obj, co in pg.captureObjects
        ]

    def profile_rows(self, profile: Obis, start: datetime, end: datetime) -> list[list[Any]]:
        """Buffer entries captured in [start, end] (selective access by range)."""
        pg = self._profile(profile)
        if not pg.captureObjects:
            self.capture_objects(profile)
        reply = self._exchange(self._client.readRowsByRange(pg, start, end))
        if reply.error:
            raise DeviceRejected(
                self.device, f"profile {profile}: buffer refused: {Refused(reply.error).text}"
            )
        rows = reply.value or []
        kinds = [_capture_kind(obj, co.attributeIndex) for obj, co in pg.captureObjects]
        out: list[list[Any]] = []
        for row in rows:
            if not isinstance(row, list) or len(row) != len(kinds):
                raise DecodeError(self.device, f"profile {profile}: malformed buffer entry")
            out.append(
                [_aware(v) if k is Kind.DATETIME else v for k, v in zip(kinds, row, strict=True)]
            )
        return out

    # --- plumbing -----------------------------------------------------------------------

    def _object(self, class_id: int, obis: Obis) -> GXDLMSObject:
        key = (int(class_id), obis)
        obj = self._objects.get(key)
        if obj is None:
            obj = GXDLMSClient.createObject(ObjectType(int(class_id)))
            obj.logicalName = str(obis)
            self._objects[key] = obj
        return obj

    def _profile(self, obis: Obis) -> GXDLMSProfileGeneric:
        pg = self._profiles.get(obis)
        if pg is None:
            pg = GXDLMSProfileGeneric(str(obis))
            self._profiles[obis] = pg
        return pg

    def _exchange(self, frames: Sequence[bytes | bytearray]) -> GXReplyData:
        """Send a request's frames and collect the reply, following block transfer."""
        sock = self._sock
        if sock is None:
            raise LinkError(self.device, "not connected")
        reply = GXReplyData()
        try:
            for frame in frames:
                sock.sendall(bytes(frame))
                self._feed(sock, reply)
                while reply.isMoreData():
                    sock.sendall(bytes(self._client.receiverReady(reply)))
                    self._feed(sock, reply)
        except OSError as exc:  # includes socket timeouts
            self.abort()
            raise LinkError(self.device, f"{self.host}:{self.port}: {exc or 'timed out'}") from None
        return reply

    def _feed(self, sock: socket.socket, reply: GXReplyData) -> None:
        buffer = GXByteBuffer()
        buffer.set(self._receive_frame(sock))
        try:
            self._client.getData(buffer, reply, None)
        except (GXDLMSExceptionResponse, GXDLMSConfirmedServiceError) as exc:
            raise DeviceRejected(self.device, f"meter refused the request: {exc}") from None
        except GXDLMSException as exc:
            raise DeviceRejected(self.device, f"meter refused the request: {exc}") from None
        except Exception as exc:  # the translation boundary for gurux's untyped errors  # noqa: BLE001
            raise DecodeError(self.device, f"answer did not decode: {exc}") from None

    def _receive_frame(self, sock: socket.socket) -> bytes:
        header = _receive_exactly(sock, _HEADER.size)
        version, _src, _dst, length = _HEADER.unpack(header)
        if version != _WRAPPER_VERSION:
            # no frame boundary to resynchronize on: whatever follows would be read as the
            # answer to the next request, so the association is dropped
            self.abort()
            raise LinkError(
                self.device,
                f"{self.host}:{self.port}: answer is not a WRAPPER frame (version {version});"
                " stream out of step, association dropped",
            )
        return header + _receive_exactly(sock, length)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionResetError("connection closed by the meter")
        chunks += chunk
    return bytes(chunks)


def _convert(address: DlmsAddress, value: Any) -> Any:
    """Decode what gurux leaves raw: date-times and the scaler_unit structure."""
    member = address.class_id.info.attributes.get(address.attribute or 0)
    if member is not None and member.kind is Kind.DATETIME:
        return _aware(value)
    return value


def _capture_kind(obj: GXDLMSObject, attribute: int) -> Kind | None:
    try:
        info = CosemClass(int(obj.objectType)).info
    except ValueError:
        return None
    member = info.attributes.get(attribute)
    return member.kind if member is not None else None


def _diagnostic(exc: GXDLMSException) -> str:
    diagnostic = getattr(exc, "diagnostic", None)
    try:
        text = (
            _DIAGNOSTIC_TEXT.get(SourceDiagnostic(diagnostic)) if diagnostic is not None else None
        )
    except ValueError:
        text = None
    return text or str(exc).replace("\r\n", " ")
