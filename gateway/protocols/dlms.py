"""DLMS/COSEM addressing: `class_id/OBIS/attribute`, e.g. `3/1.0.1.8.0.255/2`.

The OBIS code is written `A.B.C.D.E.F` or in the IEC short form `A-B:C.D.E*F` (`*F` may be
left out and means 255). The last part is an attribute index, or `m<N>` for a method
(an action such as `70/0.0.96.3.10.255/m1`, remote disconnect). Only the interface
classes the gateway knows are accepted, and only attributes that carry one value:
structures such as a Register's scaler_unit are applied by the driver, and a Profile
Generic's buffer is read by time range, not as a point.

Device options (`DlmsOptions`) name the association: client and server address,
authentication (none, low = password, high = HLS-GMAC with security suite 0) and the files
that hold the password or the keys. Secrets are read once when the mapping is loaded and
are never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretBytes,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.protocols.base import Address, AddressError, PointTyping, ProtocolSpec, read_first_line

# --- OBIS codes -----------------------------------------------------------------------

_DOTTED = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+)\.(\d+)\.(\d+)$")
_IEC = re.compile(r"^(\d+)-(\d+):(\d+)\.(\d+)\.(\d+)(?:\*(\d+))?$")


@dataclass(frozen=True, order=True)
class Obis:
    """A logical name: six value groups A..F, each 0..255."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int

    @classmethod
    def parse(cls, text: str) -> Obis:
        """`A.B.C.D.E.F` or `A-B:C.D.E*F`; ValueError saying what is wrong."""
        text = text.strip()
        match = _DOTTED.match(text) or _IEC.match(text)
        if match is None:
            raise ValueError(f"malformed OBIS code {text!r}: expected A.B.C.D.E.F or A-B:C.D.E*F")
        groups = [int(g) if g is not None else 255 for g in match.groups()]
        for name, value in zip("ABCDEF", groups, strict=True):
            if value > 255:
                raise ValueError(f"OBIS code {text!r}: value group {name} is {value}, not 0..255")
        return cls(*groups)

    @property
    def groups(self) -> tuple[int, int, int, int, int, int]:
        return (self.a, self.b, self.c, self.d, self.e, self.f)

    def __str__(self) -> str:
        return ".".join(str(g) for g in self.groups)


# --- interface classes ----------------------------------------------------------------


class Kind(enum.StrEnum):
    """What an attribute holds, as far as a point is concerned."""

    VALUE = "value"  # a number or boolean, used as is
    SCALED = "scaled"  # a number the object's scaler_unit applies to
    DATETIME = "datetime"  # a date-time octet string; the point reads POSIX seconds
    STRUCTURE = "structure"  # not one value: no point may address it


@dataclass(frozen=True)
class Member:
    name: str
    kind: Kind = Kind.VALUE


@dataclass(frozen=True)
class MethodInfo:
    name: str
    #: True: the command value is the method's parameter (an integer); False: the method
    #: takes the dummy integer(0) and a command of 1/true invokes it
    takes_value: bool = False


@dataclass(frozen=True)
class ClassInfo:
    name: str
    version: int
    #: attribute index -> member; index 1 is always the logical name
    attributes: dict[int, Member]
    methods: dict[int, MethodInfo]
    #: attribute holding scaler_unit for this class's SCALED attributes
    scaler_unit: int | None = None


_LN = Member("logical_name", Kind.STRUCTURE)


class CosemClass(enum.IntEnum):
    DATA = 1
    REGISTER = 3
    EXTENDED_REGISTER = 4
    DEMAND_REGISTER = 5
    PROFILE_GENERIC = 7
    CLOCK = 8
    DISCONNECT_CONTROL = 70
    LIMITER = 71

    @property
    def info(self) -> ClassInfo:
        return _CLASSES[self]


_CLASSES: dict[CosemClass, ClassInfo] = {
    CosemClass.DATA: ClassInfo("Data", 0, {1: _LN, 2: Member("value")}, {}),
    CosemClass.REGISTER: ClassInfo(
        "Register",
        0,
        {
            1: _LN,
            2: Member("value", Kind.SCALED),
            3: Member("scaler_unit", Kind.STRUCTURE),
        },
        {1: MethodInfo("reset")},
        scaler_unit=3,
    ),
    CosemClass.EXTENDED_REGISTER: ClassInfo(
        "Extended register",
        0,
        {
            1: _LN,
            2: Member("value", Kind.SCALED),
            3: Member("scaler_unit", Kind.STRUCTURE),
            4: Member("status"),
            5: Member("capture_time", Kind.DATETIME),
        },
        {1: MethodInfo("reset")},
        scaler_unit=3,
    ),
    CosemClass.DEMAND_REGISTER: ClassInfo(
        "Demand register",
        0,
        {
            1: _LN,
            2: Member("current_average_value", Kind.SCALED),
            3: Member("last_average_value", Kind.SCALED),
            4: Member("scaler_unit", Kind.STRUCTURE),
            5: Member("status"),
            6: Member("capture_time", Kind.DATETIME),
            7: Member("start_time_current", Kind.DATETIME),
            8: Member("period"),
            9: Member("number_of_periods"),
        },
        {1: MethodInfo("reset"), 2: MethodInfo("next_period")},
        scaler_unit=4,
    ),
    CosemClass.PROFILE_GENERIC: ClassInfo(
        "Profile generic",
        1,
        {
            1: _LN,
            2: Member("buffer", Kind.STRUCTURE),
            3: Member("capture_objects", Kind.STRUCTURE),
            4: Member("capture_period"),
            5: Member("sort_method"),
            6: Member("sort_object", Kind.STRUCTURE),
            7: Member("entries_in_use"),
            8: Member("profile_entries"),
        },
        {1: MethodInfo("reset"), 2: MethodInfo("capture")},
    ),
    CosemClass.CLOCK: ClassInfo(
        "Clock",
        0,
        {
            1: _LN,
            2: Member("time", Kind.DATETIME),
            3: Member("time_zone"),
            4: Member("status"),
            5: Member("daylight_savings_begin", Kind.DATETIME),
            6: Member("daylight_savings_end", Kind.DATETIME),
            7: Member("daylight_savings_deviation"),
            8: Member("daylight_savings_enabled"),
            9: Member("clock_base"),
        },
        {
            1: MethodInfo("adjust_to_quarter"),
            2: MethodInfo("adjust_to_measuring_period"),
            3: MethodInfo("adjust_to_minute"),
            6: MethodInfo("shift_time", takes_value=True),
        },
    ),
    CosemClass.DISCONNECT_CONTROL: ClassInfo(
        "Disconnect control",
        0,
        {
            1: _LN,
            2: Member("output_state"),
            3: Member("control_state"),
            4: Member("control_mode"),
        },
        {1: MethodInfo("remote_disconnect"), 2: MethodInfo("remote_reconnect")},
    ),
    CosemClass.LIMITER: ClassInfo(
        "Limiter",
        0,
        {
            1: _LN,
            2: Member("monitored_value", Kind.STRUCTURE),
            3: Member("threshold_active"),
            4: Member("threshold_normal"),
            5: Member("threshold_emergency"),
            6: Member("min_over_threshold_duration"),
            7: Member("min_under_threshold_duration"),
            8: Member("emergency_profile", Kind.STRUCTURE),
            9: Member("emergency_profile_group_id_list", Kind.STRUCTURE),
            10: Member("emergency_profile_active"),
            11: Member("actions", Kind.STRUCTURE),
        },
        {},
    ),
}

_KNOWN = ", ".join(f"{c.value} {c.info.name}" for c in CosemClass)


# --- addresses ------------------------------------------------------------------------


@dataclass(frozen=True)
class DlmsAddress(Address):
    """One attribute (or, with `method` set, one method) of one COSEM object."""

    class_id: CosemClass
    obis: Obis
    attribute: int | None = None
    method: int | None = None

    def __post_init__(self) -> None:
        if (self.attribute is None) == (self.method is None):
            raise ValueError("a DLMS address names exactly one attribute or one method")

    @property
    def is_method(self) -> bool:
        return self.method is not None

    @property
    def member(self) -> Member:
        assert self.attribute is not None
        return self.class_id.info.attributes[self.attribute]

    @property
    def method_info(self) -> MethodInfo:
        assert self.method is not None
        return self.class_id.info.methods[self.method]

    @property
    def scaler_unit(self) -> int | None:
        """The attribute whose scaler_unit applies to this one, if any."""
        if self.attribute is None or self.member.kind is not Kind.SCALED:
            return None
        return self.class_id.info.scaler_unit

    @property
    def target(self) -> tuple[int, Obis, int]:
        """(class id, OBIS, attribute) of the attribute this address reads."""
        assert self.attribute is not None
        return (int(self.class_id), self.obis, self.attribute)

    def conflicts_with(self, other: Address) -> bool:
        return isinstance(other, DlmsAddress) and (
            self.class_id,
            self.obis,
            self.attribute,
            self.method,
        ) == (other.class_id, other.obis, other.attribute, other.method)

    def __str__(self) -> str:
        last = f"m{self.method}" if self.method is not None else str(self.attribute)
        return f"{int(self.class_id)}/{self.obis}/{last}"


def parse(text: str, typing: PointTyping) -> DlmsAddress:
    for field in ("type", "word_order", "byte_order", "bit"):
        if getattr(typing, field) is not None:
            raise AddressError(field, f"DLMS points take their type from the meter; drop `{field}`")
    parts = text.strip().split("/")
    if len(parts) != 3:
        raise AddressError(
            "address", f"DLMS address {text!r} must be 'class_id/OBIS/attribute' (or .../m<N>)"
        )
    class_s, obis_s, member_s = (p.strip() for p in parts)
    try:
        class_id = CosemClass(int(class_s))
    except ValueError:
        raise AddressError(
            "address", f"unknown COSEM class id {class_s!r} (supported: {_KNOWN})"
        ) from None
    try:
        obis = Obis.parse(obis_s)
    except ValueError as exc:
        raise AddressError("address", str(exc)) from None
    info = class_id.info
    if member_s[:1] in ("m", "M"):
        return _method(class_id, obis, member_s)
    try:
        attribute = int(member_s)
    except ValueError:
        raise AddressError(
            "address", f"attribute {member_s!r} is neither a number nor m<method>"
        ) from None
    if attribute not in info.attributes:
        raise AddressError(
            "address",
            f"attribute {attribute} out of range for {info.name} "
            f"(class {int(class_id)} has attributes 1..{max(info.attributes)})",
        )
    member = info.attributes[attribute]
    if member.kind is Kind.STRUCTURE:
        hint = {
            "logical_name": "it is the object's name, not a value",
            "scaler_unit": "the driver applies it to the value attribute",
            "buffer": "the load profile is read by time range (read_load_profile)",
        }.get(member.name, "it is a structure, not one value")
        raise AddressError(
            "address", f"attribute {attribute} ({member.name}) of {info.name} is no point: {hint}"
        )
    return DlmsAddress(class_id, obis, attribute=attribute)


def _method(class_id: CosemClass, obis: Obis, text: str) -> DlmsAddress:
    info = class_id.info
    try:
        method = int(text[1:])
    except ValueError:
        raise AddressError("address", f"method {text!r} must be m<number>, e.g. m1") from None
    if method not in info.methods:
        known = ", ".join(f"m{i} {m.name}" for i, m in sorted(info.methods.items()))
        raise AddressError(
            "address",
            f"method {method} out of range for {info.name}"
            + (f" (methods: {known})" if known else " (the class has no methods)"),
        )
    return DlmsAddress(class_id, obis, method=method)


# --- units (IEC 62056-62 unit codes) --------------------------------------------------

#: DLMS unit code -> QUDT unit local name (see gateway.units); codes 0, 254 and 255 mean
#: "no unit" and leave a value as it is
DLMS_UNITS: dict[int, str] = {
    7: "SEC",
    9: "DEG_C",
    27: "W",
    28: "V-A",
    29: "VAR",
    30: "W-HR",
    31: "V-A-HR",
    32: "VAR-HR",
    33: "A",
    35: "V",
    44: "HZ",
    56: "PERCENT",
}
NO_UNIT_CODES = frozenset({0, 254, 255})


# --- device options -------------------------------------------------------------------


class Authentication(enum.StrEnum):
    NONE = "none"
    LOW = "low"  # LLS: a password
    HIGH = "high"  # HLS-GMAC, security suite 0 (AES-GCM-128), every APDU ciphered


_HEX16 = re.compile(r"^[0-9A-Fa-f]{32}$")
_HEX8 = re.compile(r"^[0-9A-Fa-f]{16}$")


@dataclass(frozen=True)
class Secrets:
    """What an association needs beyond its addresses. Never printed."""

    password: SecretBytes | None = None
    block_cipher_key: SecretBytes | None = None
    authentication_key: SecretBytes | None = None

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


class DlmsOptions(BaseModel):
    """Device options for a DLMS/COSEM meter (TCP, WRAPPER framing, LN referencing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: client SAP: 16 public client; meters often use 17 for LLS and 1 for HLS
    client_address: int = Field(default=16, ge=1, le=0xFFFF)
    #: server SAP (logical device), 1 = management logical device
    server_address: int = Field(default=1, ge=1, le=0xFFFF)
    authentication: Authentication = Authentication.NONE
    #: file with the LLS password on its first line (authentication: low)
    password_file: Path | None = None
    #: YAML file with `block_cipher_key` and `authentication_key`, 32 hex digits each
    #: (authentication: high)
    keys_file: Path | None = None
    #: the gateway's system title, 16 hex digits (HLS-GMAC; not a secret)
    system_title: str = Field(default="4D474D5347573031", pattern=_HEX8.pattern)
    #: logical name of the load profile (Profile Generic) read by time range
    profile_obis: str = "1.0.99.1.0.255"
    #: longest time span one profile request covers; longer ranges are split
    profile_window_s: float = Field(default=86400.0, ge=900.0, le=31 * 86400.0)

    _secrets: Secrets = PrivateAttr(default_factory=Secrets)

    @field_validator("profile_obis")
    @classmethod
    def _obis(cls, value: str) -> str:
        return str(Obis.parse(value))

    @model_validator(mode="after")
    def _read_secrets(self, info: ValidationInfo) -> DlmsOptions:
        base = Path((info.context or {}).get("base_dir", "."))
        auth = self.authentication
        if auth is Authentication.LOW and self.password_file is None:
            raise ValueError("authentication 'low' needs password_file")
        if auth is Authentication.HIGH and self.keys_file is None:
            raise ValueError("authentication 'high' needs keys_file")
        if self.password_file is not None and auth is not Authentication.LOW:
            raise ValueError(f"password_file given but authentication is {auth.value!r}")
        if self.keys_file is not None and auth is not Authentication.HIGH:
            raise ValueError(f"keys_file given but authentication is {auth.value!r}")
        if self.password_file is not None:
            self._secrets = Secrets(password=_read_password(base / self.password_file))
        if self.keys_file is not None:
            block, auth_key = _read_keys(base / self.keys_file)
            self._secrets = Secrets(block_cipher_key=block, authentication_key=auth_key)
        return self

    @property
    def secrets(self) -> Secrets:
        return self._secrets

    @property
    def profile(self) -> Obis:
        return Obis.parse(self.profile_obis)

    @property
    def system_title_bytes(self) -> bytes:
        return bytes.fromhex(self.system_title)


def _read_password(path: Path) -> SecretBytes:
    return SecretBytes(read_first_line(path, "password_file").encode("utf-8"))


def _read_keys(path: Path) -> tuple[SecretBytes, SecretBytes]:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(
            f"keys_file {str(path)!r} cannot be read: {exc.__class__.__name__}"
        ) from None  # the parser's message may quote the file, i.e. a key
    if not isinstance(data, dict):
        raise ValueError(f"keys_file {str(path)!r} must map key names to hex strings")
    keys = []
    for name in ("block_cipher_key", "authentication_key"):
        value = data.get(name)
        if not isinstance(value, str) or not _HEX16.match(value):
            raise ValueError(
                f"keys_file {str(path)!r}: {name} must be 32 hex digits (AES-128, suite 0)"
            )
        keys.append(SecretBytes(bytes.fromhex(value)))
    unknown = sorted(set(data) - {"block_cipher_key", "authentication_key"})
    if unknown:
        raise ValueError(f"keys_file {str(path)!r}: unknown entries {unknown}")
    return keys[0], keys[1]


SPEC = ProtocolSpec(
    name="dlms",
    driver="drivers.dlms.driver:DlmsDriver",
    front_end="fwsim.dlms_server:DlmsFrontEnd",
    parse_address=parse,
    options_model=DlmsOptions,
    data_types=frozenset(),
    default_port=4059,
)
