"""DLMS values <-> point values, without I/O.

A scaled attribute (Register value, Demand register averages, ...) is `raw * 10**scaler`
in the meter's unit (its scaler_unit attribute); the codec converts that into the point's
unit (Wh -> kWh) and then applies the point's own scale and offset, which are normally 1
and 0 (a scale of -1 flips a meter's import-positive sign into the DER convention).
Date-time attributes read as POSIX seconds, with the date-time as the source time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.base import invalid, to_engineering, to_raw
from drivers.dlms.protocol import DLMS_UNITS, NO_UNIT_CODES, DlmsAddress, Kind
from gateway.mapping import Point
from gateway.model import QualityFlag, Reading
from gateway.units import conversion_factor


@dataclass(frozen=True, slots=True)
class ScalerUnit:
    scaler: int
    unit: int  # IEC 62056-62 unit code

    @classmethod
    def decode(cls, value: Any) -> ScalerUnit:
        """From the scaler_unit structure {integer scaler, enum unit}."""
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"scaler_unit must be {{scaler, unit}}, got {value!r}")
        scaler, unit = int(value[0]), int(value[1])
        if not -128 <= scaler <= 127:
            raise ValueError(f"scaler {scaler} out of range -128..127")
        return cls(scaler, unit)

    @property
    def qudt(self) -> str | None:
        """The meter's unit as a QUDT local name; None for "no unit"."""
        return None if self.unit in NO_UNIT_CODES else DLMS_UNITS.get(self.unit)

    def factor_to(self, point_unit: str) -> float:
        """Meter unit -> point unit; ValueError for a unit the gateway does not know or
        that measures something else than the point."""
        if self.unit in NO_UNIT_CODES:
            return 1.0
        qudt = DLMS_UNITS.get(self.unit)
        if qudt is None:
            raise ValueError(f"meter reports DLMS unit code {self.unit}, unknown to the gateway")
        try:
            return conversion_factor(qudt, point_unit)
        except ValueError:
            raise ValueError(f"meter reports {qudt}, the point is in {point_unit}") from None


def scaled(raw: int | float, scaler: int) -> int | float:
    """raw * 10**scaler, exact for decimal scalers (12345, -2 -> 123.45)."""
    if scaler == 0:
        return raw
    if scaler < 0:
        return raw / float(10 ** (-scaler))
    return raw * int(10**scaler)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def meter_to_unit(
    value: int | float, kind: Kind, scaler_unit: ScalerUnit | None, unit: str
) -> int | float:
    """A numeric attribute value in `unit`: scaled attributes get their scaler and the
    conversion from the meter's unit; others pass as they are. ValueError if impossible."""
    if kind is not Kind.SCALED:
        return value
    if scaler_unit is None:
        raise ValueError("scaler_unit unknown")
    factor = scaler_unit.factor_to(unit)
    value = scaled(value, scaler_unit.scaler)
    return value * factor if factor != 1.0 else value


def to_reading(
    point: Point, address: DlmsAddress, value: Any, scaler_unit: ScalerUnit | None
) -> Reading:
    """The reading of one attribute value the meter returned."""
    kind = address.member.kind
    if value is None:
        return invalid(point, f"{address}: the meter returned no value")
    if kind is Kind.DATETIME:
        if not isinstance(value, datetime):
            return invalid(point, f"{address}: not a date-time: {value!r}")
        return Reading(point.id, value.timestamp(), point.unit, source_time=value)
    if isinstance(value, bool):
        return Reading(point.id, value, point.unit)
    if not is_number(value):
        return invalid(point, f"{address}: the value is a {type(value).__name__}, not a number")
    try:
        value = meter_to_unit(value, kind, scaler_unit, point.unit)
    except ValueError as exc:
        return invalid(point, f"{address}: {exc}", QualityFlag.INCONSISTENT)
    return Reading(point.id, to_engineering(point, value), point.unit)


def to_meter_value(
    point: Point, address: DlmsAddress, value: float | int | bool, scaler_unit: ScalerUnit | None
) -> float | int | bool:
    """The raw attribute value for a command value in engineering units (the inverse of
    `to_reading`); integers where the scaled result is whole."""
    raw = to_raw(point, value)
    if isinstance(raw, bool):
        return raw
    if address.member.kind is Kind.SCALED:
        if scaler_unit is None:
            raise ValueError(f"{address}: scaler_unit unknown")
        raw = raw / scaler_unit.factor_to(point.unit)
        raw = scaled(raw, -scaler_unit.scaler)
    rounded = round(raw)
    return rounded if abs(raw - rounded) < 1e-9 * max(1.0, abs(raw)) else raw
