"""Activation dispatch on one snapshot of the demo microgrid: PV 40 kW of 60, load 60 kW
(60 % curtailable), battery idle; the coupling point imports 20 kW."""

from __future__ import annotations

import math

import pytest

from gateway.config import InternalLimit
from gateway.flex.capability import DerCapability
from gateway.flex.dispatch import DerNow, DispatchInput, Headroom, dispatch
from gateway.flex.model import ReasonCode
from gateway.flex.schedule import GridLimits
from tests.support.flexplan import GRID
from tests.support.flexsim import demo_ders


def ders(held: frozenset[str] = frozenset(), bess_hi: float = 50.0) -> tuple[DerNow, ...]:
    d = demo_ders()
    return (
        DerNow(DerCapability(d["bess1"], True, True), 0.0, 0.0, -50.0, bess_hi, 0.0),
        DerNow(DerCapability(d["pv1"], True, True), 40.0, 0.0, 0.0, 40.0, 40.0, held="pv1" in held),
        DerNow(
            DerCapability(d["load1"], True, False, 60.0),
            -60.0,
            0.0,
            -60.0,
            -24.0,
            -60.0,
            held="load1" in held,
        ),
    )


def run(target_p: float | None, target_q: float | None = None, **kw: object) -> object:
    inp = DispatchInput(
        kw.pop("ders", ders()),  # type: ignore[arg-type]
        kw.pop("pcc_p", 20.0),  # type: ignore[arg-type]
        0.0,
        target_p,
        target_q,
        kw.pop("grid", GRID),  # type: ignore[arg-type]
        kw.pop("keep", ()),  # type: ignore[arg-type]
    )
    return dispatch(inp)


def check_limits(result: object, units: tuple[DerNow, ...]) -> None:
    for d in units:
        p, q = result.p[d.id], result.q[d.id]  # type: ignore[attr-defined]
        assert d.p_lo - 1e-6 <= p <= d.p_hi + 1e-6, d.id
        s = d.cap.der.ratings.s_max_kva
        if s is not None:
            assert math.hypot(p, q) <= s + 1e-6, f"{d.id} outside its S circle"
        if not d.cap.q_controllable:
            assert q == 0.0


def test_set_point_met_by_the_cheapest_der() -> None:
    r = run(0.0)
    check_limits(r, ders())
    assert r.met and r.shortfall_p_kw == pytest.approx(0.0, abs=1e-6)  # type: ignore[attr-defined]
    assert r.p["bess1"] == pytest.approx(20.0)  # 0.02/kWh beats curtailing the load (0.15)
    assert r.p["load1"] == pytest.approx(-60.0)
    assert r.pcc_p_kw == pytest.approx(0.0)  # type: ignore[attr-defined]
    # raising the import: curtailing PV costs least
    r = run(45.0)
    assert r.p["pv1"] == pytest.approx(15.0) and r.p["bess1"] == pytest.approx(0.0)  # type: ignore[attr-defined]


def test_p_and_q_together_stay_inside_every_circle() -> None:
    r = run(-30.0, -90.0)
    check_limits(r, ders())
    assert r.met  # type: ignore[attr-defined]
    assert r.pcc_q_kvar == pytest.approx(-90.0)  # type: ignore[attr-defined]


def test_what_cannot_be_reached_is_delivered_in_part_and_explained() -> None:
    r = run(-140.0)
    check_limits(r, ders())
    assert not r.met  # type: ignore[attr-defined]
    # 20 import -> the battery's 50 and the load's 36 bring it to -66 at most
    assert r.pcc_p_kw == pytest.approx(-66.0)  # type: ignore[attr-defined]
    assert r.shortfall_p_kw == pytest.approx(-74.0)  # type: ignore[attr-defined]
    texts = " | ".join(x.message for x in r.reasons)  # type: ignore[attr-defined]
    assert "bess1 discharge limit 50.0 kW" in texts
    assert "load1 curtailable share 60 %" in texts


def test_headroom_of_another_service_is_kept_and_named() -> None:
    fcr = Headroom("fcr1", "FCR", ("bess1",), 20.0, 20.0)
    r = run(-60.0, keep=(fcr,))
    check_limits(r, ders())
    assert r.p["bess1"] == pytest.approx(30.0)  # type: ignore[attr-defined]
    assert any(x.code is ReasonCode.RESERVE and x.subject == "FCR fcr1" for x in r.reasons)  # type: ignore[attr-defined]
    assert not r.violations  # type: ignore[attr-defined]


def test_held_ders_are_not_moved_and_limits_are_reported_when_already_broken() -> None:
    units = ders(held=frozenset({"pv1"}))
    r = run(60.0, ders=units)
    assert r.p["pv1"] == 40.0  # type: ignore[attr-defined]
    assert r.p["bess1"] == pytest.approx(-40.0)  # type: ignore[attr-defined]
    # without a set point the limits still hold: 230 kW import is brought under 200
    r = run(None, pcc_p=230.0)
    assert r.pcc_p_kw == pytest.approx(200.0) and not r.violations  # type: ignore[attr-defined]
    # 300 kW cannot be: everything that helps is used, and the breach is reported
    r = run(None, pcc_p=300.0)
    assert any("import limit 200" in v.message for v in r.violations)  # type: ignore[attr-defined]
    assert r.pcc_p_kw == pytest.approx(300.0 - 50.0 - 36.0)  # type: ignore[attr-defined]


def test_internal_line_limit_binds() -> None:
    line = InternalLimit(
        id="feeder-a", ders=["bess1", "pv1"], import_limit_kw=30, export_limit_kw=60
    )
    grid = GridLimits(GRID.import_kw, GRID.export_kw, GRID.q_kvar, (line,))
    r = run(-50.0, grid=grid)
    assert r.p["bess1"] + r.p["pv1"] <= 60 + 1e-6  # type: ignore[attr-defined]
    assert any(x.code is ReasonCode.INTERNAL_LIMIT for x in r.reasons)  # type: ignore[attr-defined]
