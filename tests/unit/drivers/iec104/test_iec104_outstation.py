"""The IEC 104 outstation's own logic: value coding, fault injection, command checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers.iec104.protocol import Kind
from drivers.iec104.simulator import Iec104FrontEnd, injected_quality, measured_raw
from fwsim.clock import SimClock
from fwsim.physics import GeneratorModel, Microgrid
from gateway.config import CouplingPoint, Der, DerType, Ratings
from gateway.loader import load_config
from gateway.mapping import Device, Point, Quantity
from tests.support.procs import DEMO_CONFIG


def pt(**kw: object) -> Point:
    base: dict[str, object] = {"id": "p", "address": "1/1/M_ME_NC_1", "unit": "V"}
    base.update(kw)
    return Point.model_validate(base)


def test_values_that_do_not_fit_are_clamped_with_overflow() -> None:
    assert measured_raw(pt(scale=0.1), Kind.SCALED, 230.0) == (2300, 0)
    assert measured_raw(pt(scale=0.001), Kind.SCALED, 230.0) == (32767, 0x01)
    assert measured_raw(pt(scale=100), Kind.NORMALIZED, 50.0) == (0.5, 0)
    assert measured_raw(pt(scale=10), Kind.NORMALIZED, -50.0) == (-1.0, 0x01)
    assert measured_raw(pt(), Kind.DOUBLE, 1.0) == (True, 0)
    raw, bits = measured_raw(pt(scale=0.001), Kind.COUNTER, 3_000_000.0)  # 3e9 Wh
    assert raw == 3_000_000_000 - 2**32 and bits != 0  # wrapped, carry set


def demo_device() -> Device:
    config = load_config(DEMO_CONFIG)
    return next(d for d in config.devices if d.protocol == "iec104")


def test_fault_injection_parsed_and_checked() -> None:
    dev = demo_device()
    assert injected_quality(dev, None) == {}
    got = injected_quality(dev, '{"chp1.q": "nt sb", "elsewhere.p": "IV"}')
    assert got == {"chp1.q": {"NT", "SB"}}  # points of other devices are not ours
    with pytest.raises(ValueError, match="unknown flags"):
        injected_quality(dev, '{"chp1.q": "XX"}')
    with pytest.raises(ValueError, match="JSON object"):
        injected_quality(dev, '["chp1.q"]')


def grid_with_chp() -> Microgrid:
    der = Der(
        id="chp1",
        type=DerType.GENERATOR,
        ratings=Ratings(p_min_kw=0, p_max_kw=40, min_stable_kw=10, ramp_kw_per_s=10),
    )
    clock = SimClock(start=datetime(2026, 6, 1, tzinfo=UTC))
    return Microgrid.build([der], CouplingPoint(import_limit_kw=1, export_limit_kw=1), clock)


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        (30.0, ""),
        (0.0, ""),
        (5.0, "below the minimum stable generation"),
        (-1.0, "below minimum 0"),  # the point's limits
        (45.0, "above maximum 40"),
    ],
)
def test_set_point_checked_against_limits_and_ratings(value: float, refusal: str) -> None:
    grid = grid_with_chp()
    front = Iec104FrontEnd(demo_device(), grid, "127.0.0.1", 0)
    p_set = next(p for p in front.device.points if p.id == "chp1.p_set")
    result = front.apply_command(p_set, value)
    model = grid.ders["chp1"]
    assert isinstance(model, GeneratorModel)
    if refusal:
        assert refusal in result and model.p_set_kw == 0.0
    else:
        assert result == "" and model.p_set_kw == value


def test_generator_meters_its_energy() -> None:
    grid = grid_with_chp()
    model = grid.ders["chp1"]
    assert isinstance(model, GeneratorModel)
    model.p_set_kw = 20
    model.step(datetime(2026, 6, 1, tzinfo=UTC), 2.0)  # ramps to 20 kW
    model.step(datetime(2026, 6, 1, tzinfo=UTC), 3600.0)
    assert model.energy_kwh == pytest.approx(20 + 20 * 2 / 3600)
    assert grid.value("chp1", Quantity.ENERGY_EXPORT) == pytest.approx(model.energy_kwh)
