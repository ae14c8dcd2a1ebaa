"""Plan inputs for the demo microgrid over one day, and an independent check that a plan
is physically feasible (recomputing storage energy from the net power, as the physics
does)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from gateway.config import CouplingPoint, Der, InternalLimit
from gateway.flex.capability import DerCapability, DerState
from gateway.flex.intervals import Horizon
from gateway.flex.model import Band, Reservation
from gateway.flex.schedule import DerPlanInput, GridLimits, HeldReserve, PlanInput, PlanResult
from tests.support.flexsim import demo_ders

Floats = NDArray[np.float64]
DAY = datetime(2024, 6, 3, tzinfo=UTC)
Q = timedelta(minutes=15)
HORIZON = Horizon(DAY, Q, 96)
HOURS = np.array([i * 0.25 + 0.125 for i in range(96)])
PV = 60 * np.maximum(0, np.sin(np.pi * (HOURS - 6) / 12)) * ((HOURS > 6) & (HOURS < 18))
LOAD = -80 * np.minimum(
    0.45 + 0.3 * np.exp(-((HOURS - 8) ** 2) / 4) + 0.4 * np.exp(-((HOURS - 19) ** 2) / 6), 1
)
GRID = GridLimits.of(CouplingPoint(import_limit_kw=200, export_limit_kw=150, q_limit_kvar=100))
FCR = HeldReserve("fcr1", "FCR", ("bess1",), 20.0, 20.0, 0.25, np.ones(96, bool))


def demo_input(
    soc: float = 50.0,
    reserves: tuple[HeldReserve, ...] = (),
    reservations: tuple[Reservation, ...] = (),
    other: Floats | None = None,
    internal: tuple[InternalLimit, ...] = (),
    extra: tuple[DerPlanInput, ...] = (),
    bess_ramp_kw: float | None = None,
) -> PlanInput:
    ders = demo_ders()
    bess = DerCapability(ders["bess1"], True, True)
    pv = DerCapability(ders["pv1"], True, True)
    load = DerCapability(ders["load1"], True, False, 60.0)
    inputs = (
        DerPlanInput(
            bess,
            np.full(96, -50.0),
            np.full(96, 50.0),
            np.zeros(96),
            storage=bess.storage(DerState(soc_pct=soc)),
            ramp_kw=bess_ramp_kw,
        ),
        DerPlanInput(pv, np.zeros(96), PV.copy(), PV.copy()),
        DerPlanInput(load, LOAD.copy(), LOAD * 0.4, LOAD.copy()),
        *extra,
    )
    grid = GridLimits(GRID.import_kw, GRID.export_kw, GRID.q_kvar, internal)
    return PlanInput(
        HORIZON,
        inputs,
        np.zeros(96) if other is None else other,
        grid,
        reserves=reserves,
        reservations=reservations,
    )


def up_band(rid: str, first: int, last: int, kw: float, down: float = 0.0) -> Reservation:
    bands = tuple(
        Band(HORIZON.start_of(i), HORIZON.end_of(i), p_up_kw=kw, p_down_kw=down)
        for i in range(first, last + 1)
    )
    return Reservation(rid, bands)


def energy_from_power(der: DerPlanInput, p: Floats, e_start: float, dt: float) -> Floats:
    """What a battery really stores following net power p (as fwsim physics integrates)."""
    st = der.storage
    assert st is not None
    out = [e_start]
    for x in p:
        out.append(out[-1] - dt * (x / st.eta_discharge if x >= 0 else x * st.eta_charge))
    return np.array(out)


def check_plan(inp: PlanInput, plan: PlanResult, tol: float = 1e-4) -> None:
    """Every trajectory within every DER, storage, coupling-point and line limit; the
    worst-case trajectories deliver the accepted bands; the standing reserves keep their
    headroom and energy. Raises AssertionError naming what broke."""
    h, dt = inp.horizon, inp.horizon.step_h
    trajectories = {"base": plan.p, "up": plan.p_up, "down": plan.p_down}
    for kind, p_by in trajectories.items():
        for d in inp.ders:
            p = p_by[d.id]
            assert (p >= d.p_lo - tol).all() and (p <= d.p_hi + tol).all(), f"{kind} {d.id} range"
            if d.storage is not None:
                e = energy_from_power(d, p, d.storage.e0_kwh, dt)
                assert e.min() >= d.storage.e_min_kwh - 1e-3, f"{kind} {d.id} empty: {e.min()}"
                assert e.max() <= d.storage.e_max_kwh + 1e-3, f"{kind} {d.id} full: {e.max()}"
            for need in d.needs:
                got = -p[need.first : need.last + 1].sum() * dt
                assert got >= need.energy_kwh - 1e-3, f"{kind} {d.id} EV need {got}"
            if d.ramp_kw is not None:
                assert np.abs(np.diff(p)).max(initial=0) <= d.ramp_kw + tol, f"{kind} {d.id} ramp"
        total = sum(p_by[d.id] for d in inp.ders)
        pcc = inp.other_p - total
        if not plan.violations:
            assert pcc.max() <= inp.grid.import_kw + tol, f"{kind} import limit"
            assert pcc.min() >= -inp.grid.export_kw - tol, f"{kind} export limit"
            for line in inp.grid.internal:
                flow = sum(p_by[d.id] for d in inp.ders if d.id in line.ders)
                assert flow.max() <= line.export_limit_kw + tol, f"{kind} {line.id}"
                assert flow.min() >= -line.import_limit_kw - tol, f"{kind} {line.id}"
            for res in inp.reserves:
                members = [d for d in inp.ders if d.id in res.ders]
                head_up = sum(d.p_hi - p_by[d.id] for d in members)
                head_down = sum(p_by[d.id] - d.p_lo for d in members)
                assert (head_up[res.active] >= res.up_kw - tol).all(), f"{kind} {res.id} up"
                assert (head_down[res.active] >= res.down_kw - tol).all(), f"{kind} {res.id} down"
                for d in members:
                    if d.storage is None:
                        continue
                    e = energy_from_power(d, p_by[d.id], d.storage.e0_kwh, dt)[1:]
                    st = d.storage
                    assert (
                        (e - st.e_min_kwh) * st.eta_discharge >= res.up_kw * res.sustain_h - 1e-3
                    ).all()
                    assert (
                        (st.e_max_kwh - e) / st.eta_charge >= res.down_kw * res.sustain_h - 1e-3
                    ).all()
    base = sum(plan.p[d.id] for d in inp.ders)
    swing_up = sum(plan.p_up[d.id] for d in inp.ders) - base
    swing_down = base - sum(plan.p_down[d.id] for d in inp.ders)
    total_up = sum((a[0] for a in plan.accepted.values()), np.zeros(h.count))
    total_down = sum((a[1] for a in plan.accepted.values()), np.zeros(h.count))
    assert (total_up >= 0).all() and (total_down >= 0).all()
    # in reserved intervals; outside them the worst case may recover as it likes
    reserved_up, reserved_down = total_up > tol, total_down > tol
    assert (swing_up[reserved_up] >= total_up[reserved_up] - tol).all(), "up band not deliverable"
    assert (swing_down[reserved_down] >= total_down[reserved_down] - tol).all(), "down band"
    assert h.count == plan.pcc_p.shape[0]
    assert np.allclose(plan.pcc_p, inp.other_p - base)


def der_input(der: Der, lo: Floats, hi: Floats, nat: Floats, **kw: object) -> DerPlanInput:
    return DerPlanInput(DerCapability(der, True, True), lo, hi, nat, **kw)  # type: ignore[arg-type]
