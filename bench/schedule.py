"""Reservation scheduling: the plan LP (HiGHS) against a naive merit-order heuristic.

A synthetic microgrid of N DERs (batteries, PV, controllable loads, EV chargers with
random ratings, fixed seed, batteries rather empty) over 96 quarter-hour intervals holds
a four-hour evening up band of 60 % and a midday down band of 50 % of its flexible power.
For N = 10 and 100 it times
(a) the plan: building and solving the LP with base and worst-case trajectories, and
(b) the naive way: per interval, the band goes to the cheapest DERs' power headroom in
    merit order, battery energy tracked as it goes, nothing planned ahead.
The plan's worst cases (every reserved interval activated) are recomputed as the physics
would run them; the heuristic reports the share of the band it delivers when every
reserved interval is activated. Prints one JSON line.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as tod
from pathlib import Path
from typing import TypeVar

import numpy as np

from gateway.config import Der, DerType, EvSession, Ratings
from gateway.flex.capability import DerCapability, DerState
from gateway.flex.intervals import Horizon
from gateway.flex.model import Band, Reservation
from gateway.flex.schedule import (
    DerPlanInput,
    GridLimits,
    PlanInput,
    PlanResult,
    schedule,
)

ROOT = Path(__file__).resolve().parent.parent

R = TypeVar("R")

T = 96
H = Horizon(datetime(2024, 6, 3, tzinfo=UTC), timedelta(minutes=15), T)
HOURS = np.array([i * 0.25 + 0.125 for i in range(T)])
SUN = np.maximum(0, np.sin(np.pi * (HOURS - 6) / 12)) * ((HOURS > 6) & (HOURS < 18))
DEMAND = np.minimum(
    0.45 + 0.3 * np.exp(-((HOURS - 8) ** 2) / 4) + 0.4 * np.exp(-((HOURS - 19) ** 2) / 6), 1
)
EVENING = range(68, 84)  # 17:00-21:00
NOON = range(44, 52)  # 11:00-13:00


def microgrid(n: int, seed: int = 1) -> PlanInput:
    rng = random.Random(seed)
    ders = []
    for k in range(n):
        kind = ("battery", "pv", "load", "load", "battery", "pv", "load", "ev", "pv", "battery")[
            k % 10
        ]
        size = rng.uniform(20, 120)
        if kind == "battery":
            der = Der(
                id=f"b{k}",
                type=DerType.BATTERY,
                ratings=Ratings(
                    p_min_kw=-size / 2,
                    p_max_kw=size / 2,
                    energy_kwh=size,
                    soc_min_pct=10,
                    soc_max_pct=90,
                    efficiency_charge=0.95,
                    efficiency_discharge=0.95,
                    cost_per_kwh=rng.uniform(0.01, 0.05),
                ),
            )
            cap = DerCapability(der, True, True)
            soc = rng.uniform(12, 40)  # the evening needs charging ahead
            ders.append(
                DerPlanInput(
                    cap,
                    np.full(T, -size / 2),
                    np.full(T, size / 2),
                    np.zeros(T),
                    storage=cap.storage(DerState(soc_pct=soc)),
                )
            )
        elif kind == "pv":
            der = Der(
                id=f"pv{k}", type=DerType.PV, ratings=Ratings(p_max_kw=size, cost_per_kwh=0.05)
            )
            nat = size * SUN
            ders.append(DerPlanInput(DerCapability(der, True, True), np.zeros(T), nat, nat))
        elif kind == "load":
            der = Der(
                id=f"l{k}",
                type=DerType.LOAD,
                ratings=Ratings(p_min_kw=-size, cost_per_kwh=rng.uniform(0.05, 0.3)),
            )
            nat = -size * DEMAND
            ders.append(DerPlanInput(DerCapability(der, True, False, 40.0), nat, nat * 0.6, nat))
        else:
            der = Der(
                id=f"ev{k}",
                type=DerType.EV_CHARGER,
                ratings=Ratings(p_min_kw=-22, p_max_kw=0, cost_per_kwh=0.01),
                ev=EvSession(
                    arrival=tod(17, 0), departure=tod(23, 0), energy_kwh=rng.uniform(10, 40)
                ),
            )
            cap = DerCapability(der, True, False)
            plugged, needs = cap.ev_sessions(H, H.start)
            nat = cap.ev_natural(T, needs, H.step_h)
            ders.append(
                DerPlanInput(
                    cap, np.where(plugged, -22.0, 0.0), np.zeros(T), nat, needs=tuple(needs)
                )
            )
    flexible = sum(float(np.max(d.p_hi - d.p_lo)) for d in ders)
    grid = GridLimits(import_kw=2 * flexible, export_kw=2 * flexible)
    return PlanInput(H, tuple(ders), np.zeros(T), grid, energy_margin=0.05)


def reservation(inp: PlanInput) -> Reservation:
    up = 0.6 * sum(float(np.mean(d.p_hi[68:84] - d.nat_clipped[68:84])) for d in inp.ders)
    down = 0.5 * sum(float(np.mean(d.nat_clipped[44:52] - d.p_lo[44:52])) for d in inp.ders)
    bands = [Band(H.start_of(i), H.end_of(i), p_down_kw=down) for i in NOON]
    bands += [Band(H.start_of(i), H.end_of(i), p_up_kw=up) for i in EVENING]
    return Reservation("bench", tuple(bands))


def _step(d: DerPlanInput, e: float, p: float) -> float:
    st = d.storage
    assert st is not None
    return e - H.step_h * (p / st.eta_discharge if p >= 0 else p * st.eta_charge)


def merit_order(inp: PlanInput, res: Reservation) -> float:
    """The naive way: nothing planned ahead; in each reserved interval the band goes to the
    cheapest DERs' power headroom around their natural output, as far as the energy left
    in each battery allows. Returns the share of the band (kWh) delivered."""
    got = want = 0.0
    for direction, span in (("up", EVENING), ("down", NOON)):
        energy = {d.id: d.storage.e0_kwh for d in inp.ders if d.storage is not None}
        need_kw = res.bands[-1].p_up_kw if direction == "up" else res.bands[0].p_down_kw
        for t in span:
            need = need_kw
            want += need
            for d in sorted(inp.ders, key=lambda x: x.cap.cost_per_kwh):
                p = float(d.nat_clipped[t])
                room = float(d.p_hi[t] - p) if direction == "up" else float(p - d.p_lo[t])
                take = max(min(room, need), 0.0)
                st = d.storage
                if st is not None:
                    e = energy[d.id]
                    if direction == "up":
                        take = min(take, max(e - st.e_min_kwh, 0.0) * st.eta_discharge / H.step_h)
                    else:
                        take = min(take, max(st.e_max_kwh - e, 0.0) / st.eta_charge / H.step_h)
                    energy[d.id] = _step(d, e, p + take if direction == "up" else p - take)
                need -= take
                got += take
                if need <= 1e-9:
                    break
    return got / want if want else 1.0


def verified(inp: PlanInput, plan: PlanResult, res: Reservation) -> bool:
    """The plan's worst cases recomputed as the physics would run them: every power within
    range, every battery within its window, every accepted band delivered."""
    for p_by in (plan.p, plan.p_up, plan.p_down):
        for d in inp.ders:
            p = p_by[d.id]
            if (p < d.p_lo - 1e-4).any() or (p > d.p_hi + 1e-4).any():
                return False
            if d.storage is not None:
                e = d.storage.e0_kwh
                for x in p:
                    e = _step(d, e, float(x))
                    if not d.storage.e_min_kwh - 1e-3 <= e <= d.storage.e_max_kwh + 1e-3:
                        return False
            for need in d.needs:
                if -p[need.first : need.last + 1].sum() * H.step_h < need.energy_kwh - 1e-3:
                    return False
    base = sum(plan.p[d.id] for d in inp.ders)
    up, down = plan.accepted[res.id]
    swing_up = sum(plan.p_up[d.id] for d in inp.ders) - base
    swing_down = base - sum(plan.p_down[d.id] for d in inp.ders)
    held_up, held_down = up > 1e-6, down > 1e-6  # outside them the worst case recovers
    return bool(
        (swing_up[held_up] >= up[held_up] - 1e-4).all()
        and (swing_down[held_down] >= down[held_down] - 1e-4).all()
    )


def timed(fn: Callable[[], R], repeat: int) -> tuple[float, R]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    figures: dict[str, object] = {"intervals": T}
    for n in (10, 100):
        inp = microgrid(n)
        res = reservation(inp)
        lp_s, plan = timed(lambda inp=inp, res=res: schedule(inp, res), 5 if n == 10 else 3)
        naive_s, naive_share = timed(lambda inp=inp, res=res: merit_order(inp, res), 5)
        up, down = plan.accepted[res.id]
        asked = sum(b.p_up_kw + b.p_down_kw for b in res.bands)
        figures[f"ders_{n}"] = {
            "lp_ms": round(lp_s * 1000, 1),
            "lp_solver_ms": round(plan.solve_s * 1000, 1),
            "lp_columns": plan.size[0],
            "lp_rows": plan.size[1],
            "lp_held_pct": round(100 * float((up + down).sum()) / asked, 1),
            "lp_worst_cases_feasible": verified(inp, plan, res),
            "naive_ms": round(naive_s * 1000, 2),
            "naive_delivered_pct": round(100 * naive_share, 1),
            "time_ratio_lp_to_naive": round(lp_s / naive_s, 1),
        }
    figures["goal_ms"] = {"ders_10": 50, "ders_100": 1000}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
