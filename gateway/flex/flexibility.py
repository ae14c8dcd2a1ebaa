"""The Flexibility Forecast: per interval the coupling-point baseline P and Q and how far
the DERs can really move them.

For P, one LP per direction over the whole horizon (the intervals only share the plan, so
each interval's maximum is found at once): extra injection per DER and interval within
- its power range around the planned P,
- for a battery, the energy left above its floor (below its ceiling) at *every later*
  boundary of the worst-case trajectory that already holds the reserves sold, so offering
  more at 16:00 never spends the energy a reserve sold for 18:00 needs, and net of the
  energy the standing reserves keep,
- the coupling-point and internal line limits around the planned flows,
- the headroom the standing reserves keep.
The reserved bands already sold in an interval are then subtracted. Q is the sum of the
DERs' reactive ranges at their planned P, clipped by the coupling-point Q limit, minus the
reactive bands sold.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from gateway.flex.lp import Lp
from gateway.flex.model import FlexForecast, FlexInterval, Reservation
from gateway.flex.schedule import DerPlanInput, PlanInput, PlanResult, bands_on

Floats = NDArray[np.float64]


def _energy_slack(
    d: DerPlanInput, inp: PlanInput, plan: PlanResult, direction: str
) -> Floats | None:
    """Energy (kWh, stored) the battery can give (up) or take (down) in each interval
    without breaking any later boundary of its worst-case trajectory."""
    st = d.storage
    if st is None or d.id not in plan.energy:
        return None
    path = plan.energy[d.id].copy()
    worst = (plan.energy_up if direction == "up" else plan.energy_down).get(d.id)
    if worst is not None:
        path = np.where(np.isfinite(worst), worst, path)
    e_min, e_max = st.e_min_kwh, st.e_max_kwh
    for res in inp.reserves:
        if d.id not in res.ders:
            continue
        stores = [x for x in inp.ders if x.id in res.ders and x.storage is not None]
        total = sum((x.storage.e_max_kwh - x.storage.e_min_kwh) for x in stores if x.storage)
        share = (e_max - e_min) / total if total > 0 else 0.0
        e_min += share * res.up_kw * res.sustain_h / st.eta_discharge
        e_max -= share * res.down_kw * res.sustain_h * st.eta_charge
    room = path[1:] - e_min if direction == "up" else e_max - path[1:]
    # extra energy in interval t lowers (raises) every later boundary by the same amount
    later_min = np.minimum.accumulate(room[::-1])[::-1]
    return np.maximum(later_min, 0.0)


def _headroom(inp: PlanInput, plan: PlanResult, direction: str) -> Floats:
    """Largest extra injection (up) or withdrawal (down) at the coupling point per interval."""
    T, dt = inp.horizon.count, inp.horizon.step_h
    lp = Lp(f"flexibility {direction}")
    cols: dict[str, NDArray[np.int64]] = {}
    for d in inp.ders:
        if not d.controllable:
            continue
        p = plan.p[d.id]
        room = d.p_hi - p if direction == "up" else p - d.p_lo
        energy = _energy_slack(d, inp, plan, direction)
        if energy is not None and d.storage is not None:
            st = d.storage
            # one kW more for dt hours moves the stored energy by dt*eta_c (charging side)
            # or dt/eta_d (discharging side); count the larger, dt/eta_d, either way
            per_kw = dt / st.eta_discharge
            room = np.minimum(room, energy / per_kw)
        cols[d.id] = lp.add_vars(T, 0.0, np.maximum(room, 0.0), -1.0, None)
    if not cols:
        return np.zeros(T)
    # coupling point: pcc - sign*sum(x) within [-export, import]
    room_pcc = (
        plan.pcc_p + inp.grid.export_kw if direction == "up" else inp.grid.import_kw - plan.pcc_p
    )
    rows = lp.add_rows(T, -np.inf, np.maximum(room_pcc, 0.0), None)
    for c in cols.values():
        lp.coef(rows, c, 1.0)
    for line in inp.grid.internal:
        flow = sum((plan.p[d.id] for d in inp.ders if d.id in line.ders), np.zeros(T))
        room_line = (
            line.export_limit_kw - flow if direction == "up" else line.import_limit_kw + flow
        )
        rows = lp.add_rows(T, -np.inf, np.maximum(room_line, 0.0), None)
        for der_id, c in cols.items():
            if der_id in line.ders:
                lp.coef(rows, c, 1.0)
    for res in inp.reserves:
        keep = res.up_kw if direction == "up" else res.down_kw
        if keep <= 0:
            continue
        members = [d for d in inp.ders if d.id in res.ders]
        spare = sum(
            (
                (d.p_hi - plan.p[d.id]) if direction == "up" else (plan.p[d.id] - d.p_lo)
                for d in members
            ),
            np.zeros(T),
        )
        rows = lp.add_rows(
            T, -np.inf, np.where(res.active, np.maximum(spare - keep, 0.0), np.inf), None
        )
        for der_id, c in cols.items():
            if der_id in res.ders:
                lp.coef(rows, c, 1.0)
    sol = lp.solve()
    total = np.zeros(T)
    for c in cols.values():
        total += sol.x[c]
    return total


def _sold(reservations: Sequence[Reservation], inp: PlanInput) -> tuple[Floats, ...]:
    T = inp.horizon.count
    up, down, q_up, q_down = (np.zeros(T) for _ in range(4))
    for res in reservations:
        u, dn = bands_on(res, inp.horizon)
        up += u
        down += dn
        for band in res.bands:
            for i in range(T):
                if band.start < inp.horizon.end_of(i) and inp.horizon.start_of(i) < band.end:
                    q_up[i] += band.q_up_kvar
                    q_down[i] += band.q_down_kvar
    return up, down, q_up, q_down


def q_range(inp: PlanInput, plan: PlanResult) -> tuple[Floats, Floats, Floats]:
    """Coupling-point baseline Q and its reachable min and max per interval."""
    T = inp.horizon.count
    other = inp.other_q if inp.other_q is not None else np.zeros(T)
    base = other - sum((np.full(T, d.q_base) for d in inp.ders), np.zeros(T))
    lower, upper = base.copy(), base.copy()
    for d in inp.ders:
        for t in range(T):
            lo, hi = d.cap.q_range(float(plan.p[d.id][t]))
            # pcc Q = other - sum(Q_der): DER Q at its low end raises the coupling point
            upper[t] += max(d.q_base - lo, 0.0)
            lower[t] -= max(hi - d.q_base, 0.0)
    if inp.grid.q_kvar is not None:
        lim = inp.grid.q_kvar
        upper = np.maximum(np.minimum(upper, lim), np.minimum(base, lim))
        lower = np.minimum(np.maximum(lower, -lim), np.maximum(base, -lim))
    return base, lower, upper


def forecast(
    microgrid: str, inp: PlanInput, plan: PlanResult, generated_at: datetime
) -> FlexForecast:
    """The Flexibility Forecast for the plan's horizon (reservations held are in `inp`)."""
    up = _headroom(inp, plan, "up")
    down = _headroom(inp, plan, "down")
    sold_up, sold_down, sold_q_up, sold_q_down = _sold(inp.reservations, inp)
    up = np.maximum(up - sold_up, 0.0)
    down = np.maximum(down - sold_down, 0.0)
    q_base, q_lo, q_hi = q_range(inp, plan)
    q_hi = np.maximum(q_hi - sold_q_up, q_base)
    q_lo = np.minimum(q_lo + sold_q_down, q_base)
    h = inp.horizon
    intervals = tuple(
        FlexInterval(
            start=h.start_of(i),
            end=h.end_of(i),
            baseline_p_kw=float(plan.pcc_p[i]),
            baseline_q_kvar=float(q_base[i]),
            p_min_kw=float(plan.pcc_p[i] - up[i]),
            p_max_kw=float(plan.pcc_p[i] + down[i]),
            q_min_kvar=float(q_lo[i]),
            q_max_kvar=float(q_hi[i]),
        )
        for i in range(h.count)
    )
    return FlexForecast(microgrid, generated_at, intervals)
