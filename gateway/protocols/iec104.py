"""IEC 60870-5-104 addressing: `CA/IOA/TYPE`, e.g. `1/1001/M_ME_NC_1`.

`CA` is the station's common address (1..65534), `IOA` the information object address
(1..16777215) and `TYPE` the ASDU type id, by name (`M_ME_NC_1`) or number (`13`).

- A read point names a monitoring object: `1/1001/M_ME_TF_1`.
- A write point names a command object: `1/2002/C_DC_NA_1`.
- A read-write point names both, the return information first:
  `1/1004/M_ME_NC_1+2001/C_SE_NC_1` (the command object shares the station).

Monitoring types with a CP56Time2a time tag (TB/TD/TE/TF) and those without are one
family: a point mapped as `M_ME_NC_1` also takes `M_ME_TF_1` for the same IOA (outstations
answer an interrogation without time tag and report changes with one). Whether a command
uses select-before-execute comes from the point's `sbo` field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.protocols.base import Address, AddressError, PointTyping, ProtocolSpec

MAX_CA = 65534  # 0 and 65535 are broadcast addresses, not stations
MAX_IOA = 16_777_215


class Kind(enum.StrEnum):
    """What an information object carries, independent of the time tag."""

    SINGLE = "single"  # single point / single command: bool
    DOUBLE = "double"  # double point / double command: off, on, intermediate, indeterminate
    NORMALIZED = "normalized"  # -1 .. 1-2^-15
    SCALED = "scaled"  # int16
    FLOAT = "float"  # IEEE 754 short float
    COUNTER = "counter"  # integrated total, int32

    @property
    def measured(self) -> bool:
        return self in (Kind.NORMALIZED, Kind.SCALED, Kind.FLOAT)

    @property
    def binary(self) -> bool:
        return self in (Kind.SINGLE, Kind.DOUBLE)


class TypeId(enum.IntEnum):
    """The ASDU types the gateway reads and writes (numbers as in IEC 60870-5-101/104)."""

    M_SP_NA_1 = 1
    M_DP_NA_1 = 3
    M_ME_NA_1 = 9
    M_ME_NB_1 = 11
    M_ME_NC_1 = 13
    M_IT_NA_1 = 15
    M_SP_TB_1 = 30
    M_DP_TB_1 = 31
    M_ME_TD_1 = 34
    M_ME_TE_1 = 35
    M_ME_TF_1 = 36
    M_IT_TB_1 = 37
    C_SC_NA_1 = 45
    C_DC_NA_1 = 46
    C_SE_NA_1 = 48
    C_SE_NB_1 = 49
    C_SE_NC_1 = 50

    @property
    def kind(self) -> Kind:
        return _KINDS[self]

    @property
    def is_command(self) -> bool:
        return self.name.startswith("C_")

    @property
    def time_tagged(self) -> bool:
        return self in _TIME_TAGGED

    @property
    def family(self) -> frozenset[TypeId]:
        """This type and its time-tagged (or untagged) twin."""
        for pair in _TWINS:
            if self in pair:
                return pair
        return frozenset({self})


_KINDS = {
    TypeId.M_SP_NA_1: Kind.SINGLE,
    TypeId.M_SP_TB_1: Kind.SINGLE,
    TypeId.C_SC_NA_1: Kind.SINGLE,
    TypeId.M_DP_NA_1: Kind.DOUBLE,
    TypeId.M_DP_TB_1: Kind.DOUBLE,
    TypeId.C_DC_NA_1: Kind.DOUBLE,
    TypeId.M_ME_NA_1: Kind.NORMALIZED,
    TypeId.M_ME_TD_1: Kind.NORMALIZED,
    TypeId.C_SE_NA_1: Kind.NORMALIZED,
    TypeId.M_ME_NB_1: Kind.SCALED,
    TypeId.M_ME_TE_1: Kind.SCALED,
    TypeId.C_SE_NB_1: Kind.SCALED,
    TypeId.M_ME_NC_1: Kind.FLOAT,
    TypeId.M_ME_TF_1: Kind.FLOAT,
    TypeId.C_SE_NC_1: Kind.FLOAT,
    TypeId.M_IT_NA_1: Kind.COUNTER,
    TypeId.M_IT_TB_1: Kind.COUNTER,
}
_TIME_TAGGED = frozenset(
    {
        TypeId.M_SP_TB_1,
        TypeId.M_DP_TB_1,
        TypeId.M_ME_TD_1,
        TypeId.M_ME_TE_1,
        TypeId.M_ME_TF_1,
        TypeId.M_IT_TB_1,
    }
)
_TWINS = (
    frozenset({TypeId.M_SP_NA_1, TypeId.M_SP_TB_1}),
    frozenset({TypeId.M_DP_NA_1, TypeId.M_DP_TB_1}),
    frozenset({TypeId.M_ME_NA_1, TypeId.M_ME_TD_1}),
    frozenset({TypeId.M_ME_NB_1, TypeId.M_ME_TE_1}),
    frozenset({TypeId.M_ME_NC_1, TypeId.M_ME_TF_1}),
    frozenset({TypeId.M_IT_NA_1, TypeId.M_IT_TB_1}),
)

#: types of IEC 60870-5-101 with a CP24Time2a tag, which 104 does not allow: the 104 twin
_CP24_TWINS = {
    "M_SP_TA_1": "M_SP_TB_1",
    "M_DP_TA_1": "M_DP_TB_1",
    "M_ME_TA_1": "M_ME_TD_1",
    "M_ME_TB_1": "M_ME_TE_1",
    "M_ME_TC_1": "M_ME_TF_1",
    "M_IT_TA_1": "M_IT_TB_1",
}
_SUPPORTED = ", ".join(t.name for t in TypeId)


@dataclass(frozen=True)
class InfoObject:
    ioa: int
    type_id: TypeId

    def __str__(self) -> str:
        return f"{self.ioa}/{self.type_id.name}"


@dataclass(frozen=True)
class Iec104Address(Address):
    common_address: int
    #: the monitoring object read (None for write-only points)
    monitor: InfoObject | None = None
    #: the command object written (None for read-only points)
    command: InfoObject | None = None

    @property
    def ioas(self) -> frozenset[int]:
        return frozenset(o.ioa for o in (self.monitor, self.command) if o is not None)

    def conflicts_with(self, other: Address) -> bool:
        if not isinstance(other, Iec104Address):
            return False
        return self.common_address == other.common_address and bool(self.ioas & other.ioas)

    def __str__(self) -> str:
        objects = [str(o) for o in (self.monitor, self.command) if o is not None]
        return f"{self.common_address}/{'+'.join(objects)}"


def _number(text: str, what: str, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise AddressError("address", f"IEC 104 {what} {text.strip()!r} is not a number") from None
    if not 1 <= value <= high:
        raise AddressError("address", f"IEC 104 {what} {value} out of range 1..{high}")
    return value


def _type_id(text: str) -> TypeId:
    name = text.strip().upper()
    if name.isdigit():
        try:
            return TypeId(int(name))
        except ValueError:
            raise AddressError(
                "address", f"IEC 104 type id {name} is not supported (supported: {_SUPPORTED})"
            ) from None
    if name in _CP24_TWINS:
        raise AddressError(
            "address",
            f"type {name} carries a CP24Time2a time tag, which IEC 60870-5-104 does not "
            f"allow; use {_CP24_TWINS[name]}",
        )
    try:
        return TypeId[name]
    except KeyError:
        raise AddressError(
            "address", f"IEC 104 type {text.strip()!r} unknown or unsupported ({_SUPPORTED})"
        ) from None


def _object(text: str) -> InfoObject:
    parts = text.split("/")
    if len(parts) != 2:
        raise AddressError("address", f"IEC 104 object {text.strip()!r} must be 'IOA/TYPE'")
    return InfoObject(_number(parts[0], "IOA", MAX_IOA), _type_id(parts[1]))


def _split(text: str) -> tuple[int, list[InfoObject]]:
    first, *more = text.split("+")
    head = first.strip().split("/", 1)
    if len(head) != 2 or len(more) > 1:
        raise AddressError(
            "address",
            f"IEC 104 address {text.strip()!r} must be 'CA/IOA/TYPE' "
            "(read-write: 'CA/IOA/M_TYPE+IOA/C_TYPE')",
        )
    ca = _number(head[0], "common address", MAX_CA)
    return ca, [_object(head[1]), *(_object(m) for m in more)]


_COMPATIBLE = {
    Kind.SINGLE: {Kind.SINGLE, Kind.DOUBLE},
    Kind.DOUBLE: {Kind.SINGLE, Kind.DOUBLE},
    Kind.NORMALIZED: {Kind.NORMALIZED, Kind.SCALED, Kind.FLOAT},
    Kind.SCALED: {Kind.NORMALIZED, Kind.SCALED, Kind.FLOAT},
    Kind.FLOAT: {Kind.NORMALIZED, Kind.SCALED, Kind.FLOAT},
}


def _for_direction(
    ca: int, objects: list[InfoObject], direction: str
) -> tuple[InfoObject | None, InfoObject | None]:
    monitors = [o for o in objects if not o.type_id.is_command]
    commands = [o for o in objects if o.type_id.is_command]
    if len(monitors) > 1 or len(commands) > 1:
        raise AddressError(
            "address", "a read-write IEC 104 point names one monitoring and one command object"
        )
    monitor = monitors[0] if monitors else None
    command = commands[0] if commands else None
    if direction == "read" and (command is not None or monitor is None):
        raise AddressError(
            "address",
            f"a read point needs a monitoring type (M_...), not {command}; "
            "for commands set direction: write or read-write",
        )
    if direction == "write" and monitor is not None:
        raise AddressError(
            "address",
            "a write point names only its command object; "
            "to read back the value use direction: read-write",
        )
    if direction != "read" and command is None:
        raise AddressError(
            "address",
            f"a {direction} point needs a command object (C_SC_NA_1, C_DC_NA_1, C_SE_NA_1, "
            f"C_SE_NB_1 or C_SE_NC_1), e.g. '{ca}/1001/M_ME_NC_1+2001/C_SE_NC_1'",
        )
    if direction == "read-write" and monitor is None:
        raise AddressError(
            "address",
            "a read-write point needs its return-information object first, "
            f"e.g. '{ca}/1001/M_ME_NC_1+{command}'",
        )
    if monitor is not None and command is not None:
        if monitor.ioa == command.ioa:
            raise AddressError("address", f"monitoring and command objects share IOA {monitor.ioa}")
        allowed = _COMPATIBLE.get(command.type_id.kind, set())
        if monitor.type_id.kind not in allowed:
            raise AddressError(
                "address",
                f"{monitor.type_id.name} cannot report back the value of {command.type_id.name}",
            )
    return monitor, command


def parse(text: str, typing: PointTyping) -> Iec104Address:
    for name in ("type", "word_order", "byte_order", "bit"):
        if getattr(typing, name) is not None:
            raise AddressError(
                name,
                f"`{name}` does not apply to IEC 104 points; the type id in the address "
                "(e.g. 1/1001/M_ME_NC_1) says how the value is coded",
            )
    ca, objects = _split(text)
    monitor, command = _for_direction(ca, objects, typing.direction)
    if typing.sbo and command is None:
        raise AddressError("sbo", "select-before-execute applies to command points only")
    return Iec104Address(ca, monitor, command)


class CounterFreeze(enum.StrEnum):
    """What a counter interrogation asks the outstation to do (IEC 60870-5-101 FRZ)."""

    READ = "read"
    FREEZE = "freeze"
    FREEZE_RESET = "freeze_reset"
    RESET = "reset"


class Iec104Options(BaseModel):
    """Device options for an IEC 60870-5-104 outstation (the gateway is the controlling
    station). Times in seconds; t0..t3, k and w as in IEC 60870-5-104 section 9."""

    model_config = ConfigDict(extra="forbid")

    #: originator address sent in every ASDU (0: not used)
    originator_address: int = Field(default=0, ge=0, le=255)
    #: seconds between general interrogations after the one at connect (0: only at connect)
    interrogation_cycle: float = Field(default=300.0, ge=0)
    #: seconds between counter interrogations after the one at connect (0: only at connect)
    counter_interrogation_cycle: float = Field(default=900.0, ge=0)
    counter_freeze: CounterFreeze = CounterFreeze.READ
    #: a value not refreshed for this long reads as questionable/old (default: 2.5 cycles
    #: of the interrogation that refreshes it; never when that cycle is 0)
    stale_after: float | None = Field(default=None, gt=0)
    #: send a clock synchronisation command after connect
    clock_sync: bool = False
    t0: int = Field(default=30, ge=1, le=255, description="connection establishment timeout")
    t1: int = Field(default=15, ge=1, le=255, description="timeout for an I/U frame ack")
    t2: int = Field(default=10, ge=1, le=255, description="ack timeout without data")
    t3: int = Field(default=20, ge=1, le=172800, description="idle time before a test frame")
    k: int = Field(default=12, ge=1, le=32767, description="unacknowledged I frames sent")
    w: int = Field(default=8, ge=1, le=32767, description="I frames received before ack")
    #: client thread tick of the protocol library (>= 50 ms)
    tick_rate_ms: int = Field(default=100, ge=50, le=1000)

    @field_validator("t2")
    @classmethod
    def _t2_below_t1(cls, t2: int, info: ValidationInfo) -> int:
        t1 = info.data.get("t1")
        if t1 is not None and t2 >= t1:
            raise ValueError(f"t2 ({t2} s) must be less than t1 ({t1} s)")
        return t2

    @field_validator("w")
    @classmethod
    def _w_within_k(cls, w: int, info: ValidationInfo) -> int:
        k = info.data.get("k")
        if k is not None and w > k:
            raise ValueError(f"w ({w}) must not exceed k ({k})")
        return w


SPEC = ProtocolSpec(
    name="iec104",
    driver="drivers.iec104.driver:Iec104Driver",
    front_end="fwsim.iec104_server:Iec104FrontEnd",
    parse_address=parse,
    options_model=Iec104Options,
    data_types=frozenset(),
    default_port=2404,
)
