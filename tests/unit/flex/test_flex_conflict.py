from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from gateway.flex.conflict import Envelope, check_activation, check_notification, envelope
from gateway.flex.dispatch import Dispatch
from gateway.flex.model import Activation, Band, DecisionStatus, Reason, ReasonCode, Reservation
from tests.support.flexplan import FCR, GRID, HORIZON, demo_input, up_band

Q = timedelta(minutes=15)
NOW = HORIZON.start


def test_a_fitting_reservation_is_accepted_whole() -> None:
    check = check_notification(demo_input(reserves=(FCR,)), up_band("r1", 68, 83, 40.0), NOW)
    assert check.decision.status is DecisionStatus.ACCEPTED
    assert check.decision.accepted == up_band("r1", 68, 83, 40.0)
    assert check.decision.reasons == ()
    assert check.plan is not None


def test_a_conflict_with_the_fcr_is_named_and_the_rest_accepted() -> None:
    check = check_notification(demo_input(reserves=(FCR,)), up_band("r2", 68, 83, 80.0), NOW)
    d = check.decision
    assert d.status is DecisionStatus.CURTAILED
    assert d.accepted is not None
    kept = [b.p_up_kw for b in d.accepted.bands]
    assert 30 < min(kept) < 80
    named = [r for r in d.reasons if r.code is ReasonCode.RESERVE and r.subject == "FCR fcr1"]
    assert named and any("conflicts with reserve fcr1 (FCR) on bess1" in r.message for r in named)


def test_a_conflict_with_an_accepted_reservation_is_named() -> None:
    first = up_band("crp-1", 68, 75, 70.0)
    check = check_notification(
        demo_input(reservations=(first,)), up_band("crp-2", 68, 75, 60.0), NOW
    )
    assert check.decision.status is DecisionStatus.CURTAILED
    assert any("reservation crp-1" in r.message for r in check.decision.reasons)


def test_refusals_for_time() -> None:
    past = Reservation("old", (Band(NOW - 2 * Q, NOW - Q, p_up_kw=5.0),))
    d = check_notification(demo_input(), past, NOW).decision
    assert d.status is DecisionStatus.REFUSED and d.reasons[0].code is ReasonCode.PERIOD
    late = Reservation("late", (Band(HORIZON.end, HORIZON.end + Q, p_up_kw=5.0),))
    d = check_notification(demo_input(), late, NOW).decision
    assert d.status is DecisionStatus.REFUSED
    assert any("planning horizon" in r.message for r in d.reasons)


def test_reactive_bands_against_capability_and_the_coupling_limit() -> None:
    i = 47  # noon: PV near its rating leaves little of its S
    ok = Reservation("q1", (Band(HORIZON.start_of(i), HORIZON.end_of(i), q_up_kvar=30.0),))
    assert check_notification(demo_input(), ok, NOW).decision.status is DecisionStatus.ACCEPTED
    big = Reservation("q2", (Band(HORIZON.start_of(i), HORIZON.end_of(i), q_up_kvar=150.0),))
    d = check_notification(demo_input(), big, NOW).decision
    assert d.status is DecisionStatus.CURTAILED
    assert d.accepted is not None
    # held at any P the battery may take (+-50 of S 60: 33.2 left) plus PV at its noon range
    assert 30 < d.accepted.bands[0].q_up_kvar < 100
    assert {r.code for r in d.reasons} >= {ReasonCode.REACTIVE}


ENV = Envelope(baseline_p_kw=60.0, p_min_kw=30.0, p_max_kw=70.0, q_min_kvar=0.0, q_max_kvar=0.0)
RES = up_band("r1", 68, 71, 30.0, down=10.0)
START = HORIZON.start_of(68)


def met() -> Dispatch:
    return Dispatch({}, {}, 0.0, 0.0, 0.0, 0.0, ())


def test_envelope_is_the_band_around_the_baseline_within_the_coupling_limits() -> None:
    pcc = np.full(96, 60.0)
    env = envelope(RES, pcc, HORIZON, 68, GRID)
    assert (env.baseline_p_kw, env.p_min_kw, env.p_max_kw) == (60.0, 30.0, 70.0)
    pcc[68] = 195.0
    assert envelope(RES, pcc, HORIZON, 68, GRID).p_max_kw == 200.0  # import limit


def test_activation_decisions() -> None:
    act = Activation("a1", START, START + 2 * Q, p_kw=40.0, reservation_id="r1")
    ok = check_activation(act, START, RES, None, ENV, met(), False)
    assert ok.status is DecisionStatus.ACCEPTED and ok.p_kw == 40.0

    none = check_activation(act, START, None, None, None, None, False)
    assert (
        none.status is DecisionStatus.REFUSED and none.reasons[0].code is ReasonCode.NO_RESERVATION
    )
    free = check_activation(replace(act, reservation_id=None), START, None, None, None, met(), True)
    assert free.status is DecisionStatus.ACCEPTED

    over = check_activation(act, START + 3 * Q, RES, None, ENV, met(), False)
    assert over.status is DecisionStatus.REFUSED and over.reasons[0].code is ReasonCode.PERIOD
    outside = replace(act, start=START + 5 * Q, end=START + 6 * Q)
    assert (
        check_activation(outside, START, RES, None, ENV, met(), False).status
        is DecisionStatus.REFUSED
    )

    long = replace(act, end=START + 8 * Q)
    cut = check_activation(long, START, RES, None, ENV, met(), False)
    assert cut.status is DecisionStatus.CURTAILED and cut.reasons[0].code is ReasonCode.PERIOD

    # the band is 30..70 kW: up to a quarter of its width beyond it is the baseline's drift
    deep = replace(act, p_kw=21.0)
    clamped = check_activation(deep, START, RES, None, ENV, met(), False)
    assert clamped.status is DecisionStatus.CURTAILED and clamped.p_kw == 30.0
    assert "following 30.0 kW" in clamped.reasons[0].message
    for far in (19.0, 81.0, -1e6):
        refused = check_activation(replace(act, p_kw=far), START, RES, None, ENV, met(), False)
        assert refused.status is DecisionStatus.REFUSED and refused.p_kw is None
        assert refused.reasons[0].code is ReasonCode.BAND
        assert "more than 10.0 kW beyond it" in refused.reasons[0].message

    q_env = replace(ENV, q_min_kvar=-10.0, q_max_kvar=10.0)
    near_q = check_activation(replace(act, q_kvar=14.0), START, RES, None, q_env, met(), False)
    assert near_q.status is DecisionStatus.CURTAILED and near_q.q_kvar == 10.0
    far_q = check_activation(replace(act, q_kvar=16.0), START, RES, None, q_env, met(), False)
    assert far_q.status is DecisionStatus.REFUSED and "5.0 kvar beyond" in far_q.reasons[0].message

    with_q = replace(act, q_kvar=20.0)
    no_q = check_activation(with_q, START, RES, None, ENV, met(), False)
    assert no_q.q_kvar is None and no_q.status is DecisionStatus.CURTAILED


def test_activation_against_what_runs_and_what_the_ders_can_do() -> None:
    act = Activation("a2", START, START + Q, p_kw=40.0, reservation_id="r1")
    other = Activation("a0", START, None, p_kw=50.0, reservation_id="r9")
    busy = check_activation(act, START, RES, other, ENV, met(), False)
    assert busy.status is DecisionStatus.REFUSED and "activation a0" in busy.reasons[0].message
    same = Activation("a1", START, None, p_kw=50.0, reservation_id="r1")
    assert (
        check_activation(act, START, RES, same, ENV, met(), False).status is DecisionStatus.ACCEPTED
    )

    why = (Reason(ReasonCode.RESERVE, "FCR fcr1", "FCR fcr1 keeps 20 kW up headroom"),)
    partial = Dispatch({}, {}, 48.0, 0.0, -8.0, 0.0, why)
    d = check_activation(act, START, RES, None, ENV, partial, False)
    assert d.status is DecisionStatus.CURTAILED and d.p_kw == 40.0 and d.reasons == why
    nothing = Dispatch({}, {}, 60.0, 0.0, -20.0, 0.0, why)
    assert (
        check_activation(act, START, RES, None, ENV, nothing, False).status
        is DecisionStatus.REFUSED
    )


def test_envelope_band_lookup_falls_back_to_zero_outside_bands() -> None:
    env = envelope(RES, np.full(96, 10.0), HORIZON, 10, GRID)
    assert env.p_min_kw == env.p_max_kw == pytest.approx(10.0)
