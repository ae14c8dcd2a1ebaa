"""Modbus addressing: `unit/table/address`, e.g. `1/holding/40071`.

`table` is one of coil, discrete, input, holding (short forms co, di, ir, hr); `address`
is the 0-based PDU address (0..65535). The point's `type` gives the register count and
`word_order`/`byte_order` how multi-register values are laid out; a `bit` makes a
register point a bit field.

A device is Modbus TCP (`connection.host`) or Modbus RTU on a serial line
(`connection.serial`); on a serial line every unit on that line belongs to the one device,
characters have 8 data bits and unit 0 is the broadcast address, which no unit answers.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from gateway.protocols.base import (
    Address,
    AddressError,
    DeviceIssue,
    PointTyping,
    ProtocolSpec,
)

if TYPE_CHECKING:
    from gateway.connection import Connection


class Table(enum.StrEnum):
    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bit(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING)


_TABLE_ALIASES = {
    "coil": Table.COIL,
    "co": Table.COIL,
    "discrete": Table.DISCRETE,
    "di": Table.DISCRETE,
    "input": Table.INPUT,
    "ir": Table.INPUT,
    "holding": Table.HOLDING,
    "hr": Table.HOLDING,
}


class DataType(enum.StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def registers(self) -> int:
        return _REGISTERS[self]


_REGISTERS = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}


class Order(enum.StrEnum):
    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True)
class ModbusAddress(Address):
    unit: int
    table: Table
    address: int
    data_type: DataType
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    bit: int | None = None

    @property
    def count(self) -> int:
        """Registers (or bits) this point occupies."""
        return 1 if self.table.is_bit else self.data_type.registers

    @property
    def end(self) -> int:
        return self.address + self.count

    def conflicts_with(self, other: Address) -> bool:
        if not isinstance(other, ModbusAddress):
            return False
        if (self.unit, self.table) != (other.unit, other.table):
            return False
        if self.address >= other.end or other.address >= self.end:
            return False
        # bit fields of one register may share it when their bits differ
        both_bits = self.bit is not None and other.bit is not None
        return not (both_bits and self.count == other.count == 1 and self.bit != other.bit)

    def span(self) -> tuple[Hashable, int, int]:
        return (self.unit, self.table), self.address, self.end

    def __str__(self) -> str:
        return f"{self.unit}/{self.table.value}/{self.address}"


class ModbusPointFields(BaseModel):
    """The fields a Modbus point adds to the protocol-neutral ones: how a multi-register
    value is laid out, and the bit of a register that a bit field reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    bit: int | None = None


def parse(text: str, typing: PointTyping[ModbusPointFields]) -> ModbusAddress:
    own = typing.own or ModbusPointFields()
    parts = text.strip().split("/")
    if len(parts) != 3:
        raise AddressError("address", f"modbus address {text!r} must be 'unit/table/address'")
    unit_s, table_s, addr_s = parts
    try:
        unit = int(unit_s)
    except ValueError:
        raise AddressError("address", f"modbus unit id {unit_s!r} is not a number") from None
    if not 0 <= unit <= 247:
        raise AddressError("address", f"modbus unit id {unit} out of range 0..247")
    table = _TABLE_ALIASES.get(table_s.lower())
    if table is None:
        raise AddressError(
            "address", f"modbus table {table_s!r} unknown (coil, discrete, input, holding)"
        )
    try:
        address = int(addr_s, 0)
    except ValueError:
        raise AddressError(
            "address", f"modbus register address {addr_s!r} is not a number"
        ) from None
    type_s = typing.type or ("bool" if table.is_bit else None)
    if type_s is None:
        raise AddressError("type", "modbus register point needs a type")
    try:
        data_type = DataType(type_s)
    except ValueError:
        raise AddressError(
            "type", f"unknown data type {type_s!r} (one of {', '.join(t.value for t in DataType)})"
        ) from None
    if table.is_bit and data_type is not DataType.BOOL:
        raise AddressError("type", f"{table.value} points are bool, not {data_type.value}")
    if not table.is_bit and data_type is DataType.BOOL and own.bit is None:
        raise AddressError("bit", "a bool point on a register table needs `bit` (0..15)")
    if own.bit is not None:
        if table.is_bit or data_type not in (DataType.BOOL, DataType.UINT16, DataType.INT16):
            raise AddressError("bit", "`bit` applies to single-register points only")
        if not 0 <= own.bit <= 15:
            raise AddressError("bit", f"bit {own.bit} out of range 0..15")
    count = 1 if table.is_bit else data_type.registers
    if not address >= 0 or address + count > 65536:
        raise AddressError("address", f"modbus address {address} (+{count}) out of range 0..65535")
    return ModbusAddress(unit, table, address, data_type, own.word_order, own.byte_order, own.bit)


class SunSpecLayout(BaseModel):
    """The SunSpec model chain one unit presents: the `SunS` marker at `base`, then the
    models in order. `mgms discover` records it in a draft and the simulator serves it;
    the gateway itself reads only the mapped points."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: int = Field(ge=1, le=247)
    base: int = Field(ge=0, le=65533)
    models: list[int] = Field(min_length=1)


class ModbusOptions(BaseModel):
    """Device options for Modbus (TCP or RTU)."""

    model_config = ConfigDict(extra="forbid")

    #: largest gap of unused registers the read plan bridges to save a request
    max_gap: int = Field(default=8, ge=0, le=100)
    #: registers per read request (protocol limit 125)
    max_registers: int = Field(default=125, ge=1, le=125)
    #: bits per read request (protocol limit 2000)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    #: read one point per request (the naive plan; for benchmarks and odd devices)
    coalesce: bool = True
    #: the SunSpec layouts of the device's units (see SunSpecLayout)
    sunspec: list[SunSpecLayout] = Field(default_factory=list)


def check_device(connection: Connection, addresses: Mapping[str, Address]) -> list[DeviceIssue]:
    """RTU rules: 8 data bits, and no point on the broadcast unit 0."""
    serial = connection.serial
    if serial is None:
        return []
    issues = []
    if serial.bytesize != 8:
        issues.append(
            DeviceIssue(
                "connection.serial.bytesize",
                f"Modbus RTU sends 8 data bits, not {serial.bytesize}"
                " (7 bits is Modbus ASCII, which the gateway does not speak)",
            )
        )
    for point_id, address in addresses.items():
        if isinstance(address, ModbusAddress) and address.unit == 0:
            issues.append(
                DeviceIssue(
                    "address",
                    "unit 0 is the broadcast address on a serial line and never answers;"
                    " RTU units are 1..247",
                    point=point_id,
                )
            )
    return issues


SPEC = ProtocolSpec(
    name="modbus",
    driver="drivers.modbus.driver:ModbusDriver",
    front_end="drivers.modbus.simulator:ModbusFrontEnd",
    parse_address=parse,
    options_model=ModbusOptions,
    data_types=frozenset(t.value for t in DataType),
    default_port=502,
    check_device=check_device,
    point_fields=ModbusPointFields,
)
