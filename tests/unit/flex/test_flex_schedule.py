"""The reservation plan: every solution is checked against every limit by an independent
recomputation (tests/support/flexplan.check_plan)."""

from __future__ import annotations

from datetime import time

import numpy as np
import pytest

from gateway.config import Der, DerType, EvSession, InternalLimit, Ratings
from gateway.flex.capability import DerCapability
from gateway.flex.model import ReasonCode
from gateway.flex.schedule import DerPlanInput, schedule
from tests.support.flexplan import FCR, HORIZON, LOAD, PV, check_plan, demo_input, up_band


def test_without_reservations_every_der_stays_natural() -> None:
    inp = demo_input()
    plan = schedule(inp)
    check_plan(inp, plan)
    assert plan.p["bess1"] == pytest.approx(np.zeros(96), abs=1e-6)
    assert plan.p["pv1"] == pytest.approx(PV)
    assert plan.p["load1"] == pytest.approx(LOAD)
    assert plan.pcc_p == pytest.approx(-(PV + LOAD))
    assert not plan.violations and not plan.limiting


def test_a_reservation_that_fits_is_held_in_full_with_energy_for_the_whole_period() -> None:
    inp = demo_input(reserves=(FCR,))
    res = up_band("r1", 68, 83, 40.0)  # 17:00-21:00, 40 kW up
    plan = schedule(inp, res)
    check_plan(inp, plan)
    up, down = plan.accepted["r1"]
    assert up[68:84] == pytest.approx(np.full(16, 40.0), abs=1e-6)
    assert up[:68].sum() == 0 and down.sum() == 0
    # the worst case (every interval activated) ends the battery just above the FCR floor
    e_up = plan.energy_up["bess1"]
    assert np.nanmin(e_up) >= 10 + 20 * 0.25 / 0.95 - 1e-3
    # the band is bought against the natural baseline: no charging during it to widen it
    base_pcc = plan.pcc_p[68:84]
    assert (base_pcc <= -(PV + LOAD)[68:84] + 1e-6).all()


def test_too_big_a_band_is_curtailed_to_a_common_share_and_says_why() -> None:
    inp = demo_input(reserves=(FCR,))
    res = up_band("r2", 68, 83, 80.0)
    plan = schedule(inp, res)
    check_plan(inp, plan)
    up = plan.accepted["r2"][0][68:84]
    assert 30 < up.min() < 80  # all intervals get the same share, at least
    codes = {r.code for r in plan.limiting}
    texts = " | ".join(r.message for r in plan.limiting)
    assert ReasonCode.RESERVE in codes and "fcr1" in texts
    assert "load1 curtailable share 60 %" in texts
    # without the FCR the battery's own window binds instead, and more fits
    free = schedule(demo_input(), res)
    check_plan(demo_input(), free)
    assert free.accepted["r2"][0][68:84].min() > up.min() + 1
    assert any("bess1 energy window" in r.message for r in free.limiting)


def test_accepted_reservations_keep_priority_over_a_new_one() -> None:
    first = up_band("r1", 68, 83, 50.0)
    inp = demo_input(reservations=(first,))
    plan = schedule(inp, up_band("r2", 72, 79, 60.0))
    check_plan(inp, plan)
    assert plan.accepted["r1"][0][68:84] == pytest.approx(np.full(16, 50.0), abs=1e-6)
    assert plan.accepted["r2"][0][72:80].max() < 60
    assert not plan.violations


def test_the_base_plan_precharges_for_a_long_up_band() -> None:
    inp = demo_input(soc=15.0)
    plan = schedule(inp, up_band("r1", 72, 79, 45.0))
    check_plan(inp, plan)
    assert plan.accepted["r1"][0][72:80] == pytest.approx(np.full(8, 45.0), abs=1e-6)
    assert plan.energy["bess1"][72] > 15.0 + 5  # charged before 18:00


def test_internal_line_limits_the_band_and_is_named() -> None:
    line = InternalLimit(
        id="feeder-a", ders=["pv1", "bess1"], import_limit_kw=100, export_limit_kw=70
    )
    inp = demo_input(internal=(line,))
    plan = schedule(inp, up_band("r1", 46, 49, 40.0))  # noon: PV ~ 60 kW on the feeder
    check_plan(inp, plan)
    assert plan.accepted["r1"][0][46:50].max() < 40
    assert any(
        r.code is ReasonCode.INTERNAL_LIMIT and r.subject == "feeder-a" for r in plan.limiting
    )


def test_baseline_beyond_the_coupling_limit_is_reported_not_hidden() -> None:
    other = np.zeros(96)
    other[76:80] = 300.0  # an unmetered 300 kW load at 19:00
    inp = demo_input(other=other)
    plan = schedule(inp)
    assert any(
        r.code is ReasonCode.COUPLING_POINT and "import limit 200" in r.message
        for r in plan.violations
    )
    # the plan still does what it can: discharge and curtail in those intervals
    assert plan.p["bess1"][76:80].min() > 40


def test_ramp_limit_holds_between_intervals() -> None:
    inp = demo_input(soc=15.0, bess_ramp_kw=5.0)
    plan = schedule(inp, up_band("r1", 72, 79, 45.0))
    check_plan(inp, plan)
    assert np.abs(np.diff(plan.p["bess1"])).max() <= 5 + 1e-6


def test_ev_energy_need_holds_in_every_trajectory() -> None:
    ev = Der(
        id="ev1",
        type=DerType.EV_CHARGER,
        ratings=Ratings(p_min_kw=-22, p_max_kw=0, cost_per_kwh=0.01),
        ev=EvSession(arrival=time(17, 0), departure=time(22, 0), energy_kwh=40),
    )
    cap = DerCapability(ev, True, False)
    plugged, needs = cap.ev_sessions(HORIZON, HORIZON.start)
    nat = cap.ev_natural(96, needs, 0.25)
    ev_in = DerPlanInput(
        cap,
        np.where(plugged, -22.0, 0.0),
        np.zeros(96),
        nat,
        needs=tuple(needs),
    )
    inp = demo_input(extra=(ev_in,))
    plan = schedule(inp, up_band("r1", 68, 75, 30.0, down=10.0))
    check_plan(inp, plan)
    assert plan.accepted["r1"][0][68:76] == pytest.approx(np.full(8, 30.0), abs=1e-6)
    # shifting the charging is part of the up band
    assert (plan.p_up["ev1"][68:76] > plan.p["ev1"][68:76] - 1e-6).all()
