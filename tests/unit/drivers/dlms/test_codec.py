"""DLMS value conversion: scaler, unit, point scaling, date-times, and the inverse for writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dlms.codec import ScalerUnit, scaled, to_meter_value, to_reading
from drivers.dlms.protocol import parse
from gateway.mapping import Point
from gateway.model import QualityFlag
from gateway.protocols.base import PointTyping
from gateway.units import conversion_factor

ENERGY = parse("3/1.0.1.8.0.255/2", PointTyping())
VOLTAGE = parse("4/1.0.32.7.0.255/2", PointTyping())
CLOCK = parse("8/0.0.1.0.0.255/2", PointTyping())
LIMIT = parse("71/0.0.17.0.0.255/4", PointTyping())
SUPPLY = parse("70/0.0.96.3.10.255/2", PointTyping())
WH, V, W, VARH = 30, 35, 27, 32


def pt(unit: str, scale: float = 1.0, offset: float = 0.0) -> Point:
    return Point(id="p", address="-", unit=unit, scale=scale, offset=offset)


@pytest.mark.parametrize(
    ("raw", "scaler", "expected"),
    [(12345, -2, 123.45), (12345, 0, 12345), (7, 3, 7000), (-5, -1, -0.5), (1, -3, 0.001)],
)
def test_scaled_is_exact_for_decimal_scalers(raw: int, scaler: int, expected: float) -> None:
    assert scaled(raw, scaler) == expected


def test_scaler_unit_decode() -> None:
    assert ScalerUnit.decode([-1, 35]) == ScalerUnit(-1, V)
    assert ScalerUnit.decode((3, 30)).qudt == "W-HR"
    assert ScalerUnit.decode([0, 255]).qudt is None
    for bad in (None, [1], [1, 2, 3], ["a", 30], [True, 30], [200, 30]):
        with pytest.raises(ValueError):
            ScalerUnit.decode(bad)


@pytest.mark.parametrize(
    ("unit", "su", "raw", "expected"),
    [
        ("KiloW-HR", ScalerUnit(0, WH), 123456, 123.456),  # Wh -> kWh
        ("W-HR", ScalerUnit(0, WH), 123456, 123456),
        ("KiloW-HR", ScalerUnit(3, WH), 42, 42.0),  # kWh-resolution register
        ("MegaW-HR", ScalerUnit(2, WH), 5, 0.0005),
        ("V", ScalerUnit(-1, V), 2301, 230.1),
        ("KiloV", ScalerUnit(-1, V), 2301, 0.2301),
        ("KiloVAR-HR", ScalerUnit(0, VARH), 1500, 1.5),
        ("KiloW", ScalerUnit(0, 255), 17, 17),  # no unit: the value as it is
    ],
)
def test_register_value_in_point_units(
    unit: str, su: ScalerUnit, raw: int, expected: float
) -> None:
    reading = to_reading(pt(unit), ENERGY, raw, su)
    assert reading.quality.good
    assert reading.value == pytest.approx(expected)


def test_point_scale_applies_after_the_meter_unit() -> None:
    # meter import power in W, point in kW with the DER sign convention (load < 0)
    reading = to_reading(pt("KiloW", scale=-1), ENERGY, 36000, ScalerUnit(0, W))
    assert reading.value == pytest.approx(-36.0)


def test_unit_mismatch_is_an_inconsistent_reading() -> None:
    reading = to_reading(pt("KiloW"), ENERGY, 100, ScalerUnit(0, WH))
    assert not reading.quality.good
    assert QualityFlag.INCONSISTENT in reading.quality.flags
    assert "meter reports W-HR, the point is in KiloW" in reading.detail


def test_unknown_meter_unit() -> None:
    reading = to_reading(pt("KiloW"), ENERGY, 100, ScalerUnit(0, 13))  # m3
    assert not reading.quality.good and "unit code 13" in reading.detail


def test_scaled_value_without_scaler_unit() -> None:
    assert "scaler_unit unknown" in to_reading(pt("V"), VOLTAGE, 1, None).detail


@pytest.mark.parametrize(
    ("value", "detail"),
    [(None, "no value"), (b"\x01", "bytes"), ([1, 2], "list"), ("x", "str")],
)
def test_non_numbers_are_invalid(value: Any, detail: str) -> None:
    reading = to_reading(pt("KiloW"), LIMIT, value, None)
    assert not reading.quality.good and detail in reading.detail


def test_unscaled_attributes_use_point_scaling() -> None:
    assert to_reading(pt("KiloW", scale=0.001), LIMIT, 2500, None).value == pytest.approx(2.5)
    assert to_reading(pt("UNITLESS"), SUPPLY, True, None).value is True


def test_datetime_reads_as_posix_seconds_with_source_time() -> None:
    t = datetime(2026, 3, 1, 12, 15, tzinfo=UTC)
    reading = to_reading(pt("SEC"), CLOCK, t, None)
    assert reading.value == t.timestamp() and reading.source_time == t
    assert not to_reading(pt("SEC"), CLOCK, 12, None).quality.good


@given(
    raw=st.integers(-(2**31), 2**31 - 1),
    scaler=st.integers(-4, 3),
    unit=st.sampled_from(["W-HR", "KiloW-HR", "MegaW-HR"]),
    scale=st.sampled_from([1.0, -1.0, 0.5]),
)
def test_write_value_inverts_the_reading(raw: int, scaler: int, unit: str, scale: float) -> None:
    point = pt(unit, scale=scale)
    su = ScalerUnit(scaler, WH)
    value = to_reading(point, ENERGY, raw, su).value
    assert isinstance(value, float | int)
    back = to_meter_value(point, ENERGY, value, su)
    assert back == pytest.approx(raw, rel=1e-9, abs=1e-6)


def test_write_value_is_whole_when_it_can_be() -> None:
    assert to_meter_value(pt("KiloW", scale=0.001), LIMIT, 2.5, None) == 2500
    assert isinstance(to_meter_value(pt("KiloW", scale=0.001), LIMIT, 2.5, None), int)
    assert to_meter_value(pt("UNITLESS"), SUPPLY, True, None) is True
    assert to_meter_value(pt("V"), VOLTAGE, 230.1, ScalerUnit(-1, V)) == 2301


def test_conversion_factor_refuses_other_dimensions() -> None:
    assert conversion_factor("W-HR", "KiloW-HR") == pytest.approx(0.001)
    assert conversion_factor("KiloVAR", "VAR") == pytest.approx(1000)
    with pytest.raises(ValueError, match="cannot convert W to KiloW-HR"):
        conversion_factor("W", "KiloW-HR")
