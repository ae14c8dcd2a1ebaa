"""Mapping files: devices, their connections and their points, as typed models.

The raw YAML is validated by pydantic field by field; cross-field checks that need more
than one point (duplicates, overlapping addresses, DER references) live in the loader.
Engineering value = raw * scale + offset. Numbers must be finite: a NaN write limit would
let every value through, a NaN scale turn every reading into NaN.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.connection import Connection
from gateway.protocols import Address, spec_for
from gateway.protocols.base import PointTyping
from gateway.units import UNITS, misfit

#: ids of devices, points and DERs
ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$"


class Direction(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    READ_WRITE = "read-write"

    @property
    def readable(self) -> bool:
        return self is not Direction.WRITE

    @property
    def writable(self) -> bool:
        return self is not Direction.READ


class Quantity(enum.StrEnum):
    """What a point means for its DER. Sign convention: DER P > 0 injects into the
    microgrid (generation, discharge); coupling-point P > 0 imports from the grid."""

    ACTIVE_POWER = "active_power"
    REACTIVE_POWER = "reactive_power"
    ACTIVE_POWER_SETPOINT = "active_power_setpoint"
    REACTIVE_POWER_SETPOINT = "reactive_power_setpoint"
    ACTIVE_POWER_LIMIT = "active_power_limit"  # curtailment ceiling, percent of rating
    AVAILABLE_POWER = "available_power"
    STATE_OF_CHARGE = "state_of_charge"
    ENERGY_IMPORT = "energy_import"
    ENERGY_EXPORT = "energy_export"
    REACTIVE_ENERGY_IMPORT = "reactive_energy_import"
    REACTIVE_ENERGY_EXPORT = "reactive_energy_export"
    VOLTAGE = "voltage"
    CURRENT = "current"
    FREQUENCY = "frequency"
    STATUS = "status"
    SWITCH = "switch"
    TEMPERATURE = "temperature"
    ENERGY_CAPACITY = "energy_capacity"
    OTHER = "other"


#: the counters a billing meter settles the coupling point with
ENERGY_COUNTERS = frozenset(
    {
        Quantity.ENERGY_IMPORT,
        Quantity.ENERGY_EXPORT,
        Quantity.REACTIVE_ENERGY_IMPORT,
        Quantity.REACTIVE_ENERGY_EXPORT,
    }
)


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self

    def violation(self, value: float) -> str | None:
        if self.min is not None and value < self.min:
            return f"value {value} below minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"value {value} above maximum {self.max}"
        return None


class Storage(BaseModel):
    """When a point's readings are stored, as IEC 61850 reports send them: on a data change
    beyond `deadband` (dchg with db), on every quality change (qchg), and at least every
    `integrity_s` while nothing changed (IntgPd). So a flat signal costs one row a period
    and a moving one is kept at the poll rate. The store hands the held value back at the
    poll interval between stored rows, so history reads as if every poll was kept (within
    the deadband)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    #: a value is stored when it moved more than this (the point's unit) from the last
    #: stored one; 0: on every change
    deadband: float = Field(default=0.0, ge=0)
    #: seconds after which an unchanged value is stored again; 0: store every reading
    integrity_s: float = Field(default=60.0, ge=0, le=86400)


#: a point without `storage:` stores every change exactly and the value once a minute
DEFAULT_STORAGE = Storage()


class Point(BaseModel):
    """A point's protocol-neutral fields. Fields of the point's protocol (e.g. Modbus
    `word_order`) are kept as extras and checked by the loader against the protocol's
    `point_fields` model, which refuses the ones it does not know."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    address: str
    type: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    direction: Direction = Direction.READ
    limits: Limits | None = None
    der: str | None = None
    quantity: Quantity = Quantity.OTHER
    #: after `quantity`, so its check sees the quantity it must measure
    unit: str
    description: str = ""
    #: command mode for writes: direct or select-before-operate
    sbo: bool = False
    #: when readings are stored (see Storage)
    storage: Storage = DEFAULT_STORAGE

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str, info: ValidationInfo) -> str:
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} (QUDT names such as KiloW, PERCENT, V)")
        quantity = info.data.get("quantity")
        why = misfit(quantity.value, unit) if isinstance(quantity, Quantity) else None
        if why is not None:
            raise ValueError(why)
        return unit

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, scale: float) -> float:
        if scale == 0:
            raise ValueError("scale must not be 0")
        return scale

    @field_validator("limits")
    @classmethod
    def _limits_need_write(cls, limits: Limits | None, info: ValidationInfo) -> Limits | None:
        direction = info.data.get("direction", Direction.READ)
        if limits is not None and not direction.writable:
            raise ValueError("write limits on a read-only point (set direction: read-write)")
        return limits

    def typing(self, own: BaseModel | None = None) -> PointTyping[Any]:
        """What the address parser needs; `own`: the protocol's fields of this point."""
        return PointTyping(type=self.type, direction=self.direction.value, sbo=self.sbo, own=own)


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(pattern=ID_PATTERN)
    protocol: str
    connection: Connection
    poll_interval: float = Field(default=1.0, gt=0, le=86400)
    timeout: float = Field(default=1.0, gt=0, le=60)
    options: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    points: list[Point] = Field(default_factory=list)

    _addresses: dict[str, Address] = PrivateAttr(default_factory=dict)
    _options: BaseModel | None = PrivateAttr(default=None)

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, protocol: str) -> str:
        spec_for(protocol)  # raises ValueError naming the known ones
        return protocol

    def address_of(self, point_id: str) -> Address:
        """The typed address of a point (parsed once by the loader)."""
        return self._addresses[point_id]

    @property
    def typed_options(self) -> BaseModel:
        if self._options is None:
            self._options = spec_for(self.protocol).options_model.model_validate(self.options)
        return self._options


class MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: list[Device] = Field(default_factory=list)
