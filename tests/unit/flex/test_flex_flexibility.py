"""The Flexibility Forecast promises only what a reservation could really get: each
interval's offer is tested by reserving exactly that much (and a little more)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.flex import flexibility
from gateway.flex.model import FlexForecast
from gateway.flex.schedule import PlanInput, PlanResult, schedule
from tests.support.flexplan import FCR, HORIZON, check_plan, demo_input, up_band

SAMPLE = (2, 30, 46, 68, 80)  # night, morning, noon, evening peak, late


def forecast(inp: PlanInput) -> tuple[PlanInput, PlanResult, FlexForecast]:
    plan = schedule(inp)
    return inp, plan, flexibility.forecast("demo", inp, plan, HORIZON.start)


@pytest.mark.parametrize("soc", [50.0, 12.0, 88.0])
def test_every_offer_is_deliverable_and_tight(soc: float) -> None:
    inp, plan, ff = forecast(demo_input(soc=soc, reserves=(FCR,)))
    for i in SAMPLE:
        iv = ff.intervals[i]
        assert iv.baseline_p_kw == pytest.approx(plan.pcc_p[i])
        for up, down in ((iv.p_up_kw, 0.0), (0.0, iv.p_down_kw)):
            if up + down < 0.5:
                continue
            res = up_band("probe", i, i, up, down)
            got = schedule(inp, res)
            check_plan(inp, got)
            a_up, a_down = got.accepted["probe"]
            assert a_up[i] == pytest.approx(up, abs=1e-3) and a_down[i] == pytest.approx(
                down, abs=1e-3
            )
            more = up_band("probe", i, i, up + 2.0 if up else 0.0, down + 2.0 if down else 0.0)
            extra = schedule(inp, more).accepted["probe"]
            if soc == 50.0:  # power-limited: the offer is the real edge
                assert extra[0][i] + extra[1][i] < up + down + 1.0


def test_selling_a_band_lowers_the_offer_by_it_and_keeps_the_rest_deliverable() -> None:
    _, _, before = forecast(demo_input())
    sold = up_band("r1", 68, 75, 30.0)
    inp, _, after = forecast(demo_input(reservations=(sold,)))
    for i in range(68, 76):
        b, a = before.intervals[i], after.intervals[i]
        # never more than what is left; here the load can carry the sold band, so no less
        assert a.p_up_kw <= b.p_up_kw - 30.0 + 1e-3
        assert a.p_up_kw >= b.p_up_kw - 30.0 - 0.5
    # outside the sold period only the energy it may use limits the offer
    assert after.intervals[40].p_up_kw == pytest.approx(before.intervals[40].p_up_kw, abs=1e-6)
    i = 70
    left = after.intervals[i].p_up_kw
    both = schedule(inp, up_band("r2", i, i, left))
    assert both.accepted["r2"][0][i] == pytest.approx(left, abs=1e-3)
    assert both.accepted["r1"][0][68:76] == pytest.approx(np.full(8, 30.0), abs=1e-6)


def test_reactive_limits_follow_the_s_rating_at_planned_power() -> None:
    _, _, ff = forecast(demo_input())
    noon = ff.intervals[47]
    night = ff.intervals[4]
    # at night the PV inverter's whole S (66) and the battery's (60) are free: 126 > 100 limit
    assert night.q_max_kvar == pytest.approx(100.0) and night.q_min_kvar == pytest.approx(-100.0)
    # at noon the PV runs near 60 kW: sqrt(66^2 - P^2) left, plus the idle battery's 60
    pv_p = 60 * np.sin(np.pi * (47 * 0.25 + 0.125 - 6) / 12)
    expected = 60 + np.sqrt(66**2 - pv_p**2)
    assert noon.q_up_kvar == pytest.approx(expected, rel=1e-6)
