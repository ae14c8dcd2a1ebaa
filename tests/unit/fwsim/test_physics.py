"""DER physics: set points followed within limits, energy conserved, meter sums."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fwsim.clock import SimClock
from fwsim.physics import BatteryModel, Microgrid, PvModel, UnknownQuantity
from gateway.config import CouplingPoint, Der, DerType, Ratings
from gateway.mapping import Quantity

NOON = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


def battery(**ratings: float) -> Der:
    base = {
        "p_min_kw": -50,
        "p_max_kw": 50,
        "energy_kwh": 100,
        "soc_min_pct": 10,
        "soc_max_pct": 90,
        "efficiency_charge": 0.9,
        "efficiency_discharge": 0.9,
    }
    base.update(ratings)
    return Der(id="b", type=DerType.BATTERY, ratings=Ratings(**base))


def test_battery_follows_setpoint_and_integrates_energy() -> None:
    m = BatteryModel(der=battery(), soc_pct=50)
    m.p_set_kw = 30
    m.step(NOON, 3600)  # one hour discharging at 30 kW
    assert m.p_kw == pytest.approx(30)
    # 30 kWh delivered costs 30/0.9 kWh of stored energy
    assert m.soc_pct == pytest.approx(50 - 100 * (30 / 0.9) / 100)


def test_battery_clamped_by_rating_and_soc_window() -> None:
    m = BatteryModel(der=battery(), soc_pct=12)
    m.p_set_kw = 500
    m.step(NOON, 3600)
    # only 2 kWh above the 10 % floor: power limited so SOC stops at the floor
    assert m.p_kw == pytest.approx(2 * 0.9)
    assert m.soc_pct == pytest.approx(10)
    m.p_set_kw = -500
    m.step(NOON, 1)
    assert m.p_kw == pytest.approx(-50)


def test_battery_ramp_limits_change() -> None:
    m = BatteryModel(der=battery(ramp_kw_per_s=5), soc_pct=50)
    m.p_set_kw = 40
    m.step(NOON, 2)
    assert m.p_kw == pytest.approx(10)


def test_reactive_power_limited_by_apparent_rating() -> None:
    m = BatteryModel(der=battery(s_max_kva=50), soc_pct=50)
    m.p_set_kw, m.q_set_kvar = 40, 100
    m.step(NOON, 1)
    assert m.q_kvar == pytest.approx(30)


def test_pv_daily_profile_and_curtailment() -> None:
    pv = PvModel(der=Der(id="pv", type=DerType.PV, ratings=Ratings(p_max_kw=60)))
    pv.step(NOON, 1)
    assert pv.p_kw == pytest.approx(60)
    pv.limit_pct = 25
    pv.step(NOON, 1)
    assert pv.p_kw == pytest.approx(15) and pv.available_kw == pytest.approx(60)
    pv.step(datetime(2026, 6, 21, 3, 0, tzinfo=UTC), 1)
    assert pv.p_kw == 0


def test_meter_is_minus_sum_of_injections() -> None:
    clock = SimClock(start=NOON, speed=3600.0)
    ders = [
        battery(),
        Der(id="pv", type=DerType.PV, ratings=Ratings(p_max_kw=60)),
        Der(id="load", type=DerType.LOAD, ratings=Ratings(p_min_kw=-80, p_max_kw=0)),
    ]
    grid = Microgrid.build(ders, CouplingPoint(import_limit_kw=100, export_limit_kw=100), clock)
    grid.apply("b", Quantity.ACTIVE_POWER_SETPOINT, -20)
    grid.step()
    injected = sum(grid.value(d.id, Quantity.ACTIVE_POWER) for d in ders)
    assert grid.value("pcc", Quantity.ACTIVE_POWER) == pytest.approx(-injected)
    with pytest.raises(UnknownQuantity):
        grid.apply("pv", Quantity.ACTIVE_POWER_SETPOINT, 1)
    with pytest.raises(UnknownQuantity):
        grid.value("ghost", Quantity.ACTIVE_POWER)
