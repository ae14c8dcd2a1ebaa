from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta

import pytest

from gateway.config import Der, DerType, EvSession, Ratings
from gateway.flex.capability import POLYGON_SIDES, DerCapability, DerState, q_polygon_error
from gateway.flex.intervals import Horizon
from gateway.loader import load_config
from gateway.points import PointTable
from tests.support.flexsim import FLEX_CONFIG, demo_ders


def cap(der: Der, p: bool = True, q: bool = True, curtail: float = 0.0) -> DerCapability:
    return DerCapability(der, p, q, curtail)


def test_roles_from_the_mapping_decide_what_is_controllable() -> None:
    config = load_config(FLEX_CONFIG)
    table = PointTable(config)
    caps = {d.id: DerCapability.of(d, table) for d in config.gateway.ders}
    assert caps["bess1"].p_controllable and caps["bess1"].q_controllable
    assert caps["pv1"].p_controllable and caps["pv1"].q_controllable
    # the load's curtailment point allows at most 60 % (its write limit)
    assert caps["load1"].p_controllable and not caps["load1"].q_controllable
    assert caps["load1"].curtail_max_pct == 60
    assert caps["pv1"].distributed and not caps["bess1"].distributed


def test_power_range_per_type() -> None:
    ders = demo_ders()
    assert cap(ders["bess1"]).p_range(0.0) == (-50, 50)
    assert cap(ders["bess1"]).p_range(0.0, online=False) == (0.0, 0.0)
    assert cap(ders["pv1"]).p_range(42.0) == (0.0, 42.0)  # curtail only
    assert cap(ders["load1"], curtail=60).p_range(-50.0) == (-50.0, pytest.approx(-20.0))
    assert cap(ders["pv1"], p=False).p_range(42.0) == (42.0, 42.0)
    gen = Der(id="g", type=DerType.GENERATOR, ratings=Ratings(p_max_kw=100, min_stable_kw=30))
    assert cap(gen).p_range(50.0) == (30.0, 100.0)  # running: min stable .. max
    assert cap(gen).p_range(0.0) == (0.0, 0.0)  # stopped: starting is not this LP's call
    ev = Der(id="ev", type=DerType.EV_CHARGER, ratings=Ratings(p_min_kw=-22, p_max_kw=-1.4))
    assert cap(ev).p_range(-22.0) == (-22.0, -1.4)


def test_natural_output_undoes_the_current_curtailment() -> None:
    ders = demo_ders()
    load = cap(ders["load1"], curtail=60)
    assert load.natural_now(DerState(p_kw=-30.0, limit_pct=25.0)) == pytest.approx(-40.0)
    pv = cap(ders["pv1"])
    assert pv.natural_now(DerState(p_kw=20.0, available_kw=45.0, limit_pct=33.0)) == 45.0
    assert cap(ders["bess1"]).natural_now(DerState(p_kw=30.0)) == 0.0


def test_reactive_range_from_s_rating_pf_and_fixed_bounds() -> None:
    bess = cap(demo_ders()["bess1"])  # S = 60 kVA
    assert bess.q_range(0.0) == (-60.0, 60.0)
    lo, hi = bess.q_range(48.0)
    assert hi == pytest.approx(36.0) and lo == pytest.approx(-36.0)
    pf = Der(id="i", type=DerType.PV, ratings=Ratings(p_max_kw=100, power_factor_min=0.9))
    slope = math.tan(math.acos(0.9))
    assert cap(pf).q_range(50.0)[1] == pytest.approx(50 * slope)
    assert cap(pf).q_range(0.0) == (0.0, 0.0)
    fixed = Der(
        id="f", type=DerType.BATTERY, ratings=Ratings(energy_kwh=1, q_min_kvar=-5, q_max_kvar=8)
    )
    assert cap(fixed).q_range(100.0) == (-5.0, 8.0)
    bare = Der(id="b", type=DerType.PV, ratings=Ratings(p_max_kw=10))
    assert cap(bare).q_range(0.0) == (0.0, 0.0)  # nothing rated: nothing promised
    assert cap(demo_ders()["bess1"], q=False).q_range(0.0) == (0.0, 0.0)


def test_reactive_range_held_over_a_power_range_is_the_worst_case() -> None:
    bess = cap(demo_ders()["bess1"])
    lo, hi = bess.q_range_over(-50.0, 10.0)
    assert lo == pytest.approx(-hi)
    assert hi == pytest.approx(math.sqrt(60**2 - 50**2))
    pf = cap(
        Der(
            id="i",
            type=DerType.BATTERY,
            ratings=Ratings(energy_kwh=1, p_min_kw=-10, p_max_kw=10, power_factor_min=0.8),
        )
    )
    assert pf.q_range_over(-10.0, 10.0) == (0.0, 0.0)  # crosses P = 0, where the cone is empty
    assert pf.q_range_over(5.0, 10.0)[1] == pytest.approx(5 * 0.75)


def test_polygon_never_promises_more_than_the_circle() -> None:
    bess = cap(demo_ders()["bess1"])
    facets = bess.facets(-50.0, 50.0)
    assert len(facets) == POLYGON_SIDES
    for k in range(720):
        a = 2 * math.pi * k / 720
        # the farthest point of the polygon in this direction lies within the circle
        reach = min(
            f.c / (f.a * math.cos(a) + f.b * math.sin(a))
            for f in facets
            if f.a * math.cos(a) + f.b * math.sin(a) > 1e-9
        )
        assert reach <= 60 + 1e-9
        assert reach >= 60 * (1 - q_polygon_error()) - 1e-9


def test_storage_window_and_sustainable_power() -> None:
    st = cap(demo_ders()["bess1"]).storage(DerState(soc_pct=30.0))
    assert st is not None
    assert (st.e0_kwh, st.e_min_kwh, st.e_max_kwh) == (30.0, 10.0, 90.0)
    # 20 kWh above the floor, 95 % discharge efficiency, over 2 h
    assert st.max_discharge_kw(30.0, 2.0) == pytest.approx(20 * 0.95 / 2)
    assert st.max_charge_kw(30.0, 2.0) == pytest.approx(60 / 0.95 / 2)
    assert cap(demo_ders()["pv1"]).storage(DerState()) is None


def test_ev_sessions_and_uncontrolled_charging() -> None:
    ev = Der(
        id="ev",
        type=DerType.EV_CHARGER,
        ratings=Ratings(p_min_kw=-11, p_max_kw=0),
        ev=EvSession(arrival=time(18, 0), departure=time(7, 0), energy_kwh=30),
    )
    c = cap(ev)
    h = Horizon(datetime(2024, 6, 3, 12, 0, tzinfo=UTC), timedelta(minutes=15), 96)
    plugged, needs = c.ev_sessions(h, h.start)
    assert plugged.sum() == 13 * 4  # 18:00 to 07:00
    assert len(needs) == 1 and needs[0].energy_kwh == 30
    assert h.start_of(needs[0].first).hour == 18 and h.end_of(needs[0].last).hour == 7
    natural = c.ev_natural(h.count, needs, h.step_h)
    assert -natural.sum() * h.step_h == pytest.approx(30.0)
    assert natural.min() == -11
    # a session already running counts what it received
    now = datetime(2024, 6, 3, 20, 0, tzinfo=UTC)
    h2 = Horizon(now, timedelta(minutes=15), 8)
    _, needs2 = c.ev_sessions(h2, now, delivered_kwh=12.0)
    assert needs2[0].energy_kwh == pytest.approx(18.0)
    with pytest.raises(ValueError, match="only for an ev_charger"):
        Der(id="x", type=DerType.PV, ev=EvSession(arrival=time(1), departure=time(2), energy_kwh=1))
