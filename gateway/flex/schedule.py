"""Reservation scheduling: the plan that keeps every reserved band deliverable.

One linear program over the horizon (HiGHS). For each controllable DER it plans a base
trajectory (what the DER does unless activated) and, from the first reserved interval on,
two worst-case trajectories: *up* (every reserved up band activated in full, one after the
other) and *down*. All three respect the DER's power range, ramp, storage energy window
and EV energy needs, the coupling-point and internal line limits, and the headroom and
sustain energy of the standing reserves (e.g. FCR). Coupling rows require
  sum_d (P_up - P_base) >= accepted up band, sum_d (P_base - P_down) >= accepted down band
in every reserved interval. The worst-case trajectories share the base plan's energy at
the first reserved interval, so pre-charging for a reserve shows in the base plan.

Objective, in tiers so that a higher tier is never traded for a lower one:
  limit slack (1e5/kW) > existing reserves and standing reserves (1e3/kW)
  > accepting the candidate reservation > DER cost/wear (cost_per_kwh * kWh).
A candidate that does not fit is accepted in part: every interval gets at least the same
share of its band (the largest share that fits), and intervals that can take more get
more. The binding limits (rows and bounds whose dual lies in the acceptance tier) name why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from gateway.config import CouplingPoint, DerType, InternalLimit
from gateway.errors import SolverError
from gateway.flex.capability import DerCapability, EnergyNeed, Storage
from gateway.flex.intervals import Horizon
from gateway.flex.lp import INF, Index, Lp
from gateway.flex.model import Reason, ReasonCode, Reservation
from gateway.flex.reasons import Hit, Tag, group, same

Floats = NDArray[np.float64]

M_LIMIT = 1e5
M_RESERVE = 1e3
#: accepting the candidate: a uniform share of its bands first, then more where it fits
W_SHARE = 10.0
W_ACCEPT = 1.0
#: cost weight of the hypothetical worst-case trajectories relative to the base plan; in
#: them stored energy costs more than anything else, so the worst case leans on the DERs
#: without an energy limit and the storage energy it leaves stays on offer
WORST_CASE_COST = 0.01
WORST_CASE_STORAGE_PER_KWH = 0.05
EPS = 1e-6


@dataclass(frozen=True)
class DerPlanInput:
    """One DER over the horizon: its reachable P range and natural P per interval."""

    cap: DerCapability
    p_lo: Floats
    p_hi: Floats
    p_nat: Floats
    storage: Storage | None = None
    needs: tuple[EnergyNeed, ...] = ()
    #: largest change of P between consecutive intervals, kW (None: no limit)
    ramp_kw: float | None = None
    #: reactive power the DER keeps unless told otherwise (kvar, injection)
    q_base: float = 0.0

    def __post_init__(self) -> None:
        n = self.p_nat.shape[0]
        if self.p_lo.shape != (n,) or self.p_hi.shape != (n,):
            raise ValueError(f"DER {self.id!r}: P range arrays do not match the horizon")
        if (self.p_lo > self.p_hi + EPS).any():
            raise ValueError(f"DER {self.id!r}: p_lo above p_hi")

    @property
    def id(self) -> str:
        return self.cap.id

    @property
    def controllable(self) -> bool:
        return bool((self.p_hi - self.p_lo).max(initial=0.0) > EPS)

    @property
    def nat_clipped(self) -> Floats:
        return np.clip(self.p_nat, self.p_lo, self.p_hi)


@dataclass(frozen=True)
class GridLimits:
    import_kw: float
    export_kw: float
    q_kvar: float | None = None
    internal: tuple[InternalLimit, ...] = ()

    @classmethod
    def of(cls, point: CouplingPoint, internal: Sequence[InternalLimit] = ()) -> GridLimits:
        return cls(
            point.import_limit_kw, point.export_limit_kw, point.q_limit_kvar, tuple(internal)
        )


@dataclass(frozen=True)
class HeldReserve:
    """A standing reserve over the horizon (mask: intervals where it is contracted)."""

    id: str
    service: str
    ders: tuple[str, ...]
    up_kw: float
    down_kw: float
    sustain_h: float
    active: NDArray[np.bool_]


@dataclass(frozen=True)
class PlanInput:
    horizon: Horizon
    ders: tuple[DerPlanInput, ...]
    #: the part of the coupling-point P (import +) that no DER explains, per interval
    other_p: Floats
    grid: GridLimits
    reserves: tuple[HeldReserve, ...] = ()
    #: reservations already accepted (their bands are held like the standing reserves)
    reservations: tuple[Reservation, ...] = ()
    #: the part of the coupling-point Q no DER explains (None: zero)
    other_q: Floats | None = None
    #: share of each battery's usable energy the worst cases leave untouched
    energy_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.other_p.shape != (self.horizon.count,):
            raise ValueError("other_p does not match the horizon")
        for der in self.ders:
            if der.p_nat.shape != (self.horizon.count,):
                raise ValueError(f"DER {der.id!r}: arrays do not match the horizon")

    def der(self, der_id: str) -> DerPlanInput | None:
        return next((d for d in self.ders if d.id == der_id), None)


def _span(horizon: Horizon, start: datetime, end: datetime) -> range:
    """Horizon intervals overlapping [start, end)."""
    first = max((start - horizon.start) // horizon.step, 0)
    last = min(-((horizon.start - end) // horizon.step), horizon.count)  # ceil
    return range(first, max(last, first))


def bands_on(reservation: Reservation, horizon: Horizon) -> tuple[Floats, Floats]:
    """Up and down P band per horizon interval (the largest band overlapping it)."""
    up, down = np.zeros(horizon.count), np.zeros(horizon.count)
    for band in reservation.bands:
        span = _span(horizon, band.start, band.end)
        if span:
            sl = slice(span.start, span.stop)
            up[sl] = np.maximum(up[sl], band.p_up_kw)
            down[sl] = np.maximum(down[sl], band.p_down_kw)
    return up, down


@dataclass(frozen=True)
class Trajectory:
    """P of one DER in one trajectory: constant + sum(coef * x[cols]) per interval."""

    first: int  # horizon index of the first interval it covers
    const: Floats
    terms: tuple[tuple[Index, float], ...]
    energy: Index | None = None  # E at the start of each covered interval and after the last

    def value(self, x: Floats) -> Floats:
        out = self.const.copy()
        for cols, coef in self.terms:
            out += coef * x[cols]
        return out


@dataclass
class PlanResult:
    horizon: Horizon
    #: base P per DER (kW, injection)
    p: dict[str, Floats]
    #: what each DER would do left alone (the plan's input), for comparison with p
    natural: dict[str, Floats]
    #: stored energy per battery at each interval boundary (count + 1 values)
    energy: dict[str, Floats]
    #: worst-case energy trajectories (NaN before the first reserved interval)
    energy_up: dict[str, Floats]
    energy_down: dict[str, Floats]
    p_up: dict[str, Floats]
    p_down: dict[str, Floats]
    #: coupling-point P of the base plan (import +)
    pcc_p: Floats
    #: accepted up/down band per reservation id (candidate included)
    accepted: dict[str, tuple[Floats, Floats]]
    #: what limited the candidate reservation
    limiting: tuple[Reason, ...] = ()
    #: limits the plan cannot keep whatever it does (e.g. a forecast beyond the import limit)
    violations: tuple[Reason, ...] = ()
    cost: float = 0.0
    solve_s: float = 0.0
    #: LP columns and rows
    size: tuple[int, int] = (0, 0)
    #: per battery, the least (most) stored energy at each interval boundary that still
    #: covers the reserved up (down) bands ahead, for the real-time dispatch
    energy_floor: dict[str, Floats] = field(default_factory=dict)
    energy_ceiling: dict[str, Floats] = field(default_factory=dict)


class _Builder:
    def __init__(self, inp: PlanInput, candidate: Reservation | None) -> None:
        self.inp = inp
        self.T = inp.horizon.count
        self.dt = inp.horizon.step_h
        self.lp = Lp("reservation plan")
        self.candidate = candidate
        self.held = list(inp.reservations) + ([candidate] if candidate is not None else [])
        self.bands = {r.id: bands_on(r, inp.horizon) for r in self.held}
        up_any, down_any = np.zeros(self.T, bool), np.zeros(self.T, bool)
        for up, down in self.bands.values():
            up_any |= up > EPS
            down_any |= down > EPS
        self.first = {
            "base": 0,
            "up": int(np.argmax(up_any)) if up_any.any() else None,
            "down": int(np.argmax(down_any)) if down_any.any() else None,
        }
        self.ctrl = [d for d in inp.ders if d.controllable]
        self.fixed = [d for d in inp.ders if not d.controllable]
        self.traj: dict[str, dict[str, Trajectory]] = {"base": {}, "up": {}, "down": {}}
        #: penalised slack columns: (columns, tag, horizon index of the first, upper side)
        self.slacks: list[tuple[Index, Tag, int, bool]] = []
        self.accept: dict[str, dict[str, Index]] = {}

    # -- DER trajectories ---------------------------------------------------------------

    def _der(self, d: DerPlanInput, kind: str, first: int) -> Trajectory:
        n = self.T - first
        sl = slice(first, self.T)
        lo, hi, nat = d.p_lo[sl], d.p_hi[sl], d.nat_clipped[sl]
        if kind == "base":
            c = d.cap.cost_per_kwh * self.dt
        elif d.storage is not None:
            c = (d.cap.cost_per_kwh * WORST_CASE_COST + WORST_CASE_STORAGE_PER_KWH) * self.dt
        else:
            c = d.cap.cost_per_kwh * WORST_CASE_COST * self.dt
        name = d.id

        def tags(code: ReasonCode, lower: str, upper: str) -> Callable[[int], Tag]:
            return lambda i: Tag(code, name, lower, upper, first + i)

        if d.storage is not None:
            st = d.storage
            pd = self.lp.add_vars(
                n,
                np.maximum(lo, 0.0),
                np.maximum(hi, 0.0),
                c,
                tags(
                    ReasonCode.DER_LIMIT,
                    "",
                    f"{name} discharge limit {d.cap.der.ratings.p_max_kw:g} kW",
                ),
            )
            pc = self.lp.add_vars(
                n,
                np.maximum(-hi, 0.0),
                np.maximum(-lo, 0.0),
                c,
                tags(
                    ReasonCode.DER_LIMIT,
                    "",
                    f"{name} charge limit {-d.cap.der.ratings.p_min_kw:g} kW",
                ),
            )
            margin = (
                0.0 if kind == "base" else self.inp.energy_margin * (st.e_max_kwh - st.e_min_kwh)
            )
            e_lo = np.full(n + 1, min(st.e_min_kwh + margin, st.e0_kwh))
            e_hi = np.full(n + 1, max(st.e_max_kwh - margin, st.e0_kwh))
            if kind == "base":
                e_lo[0] = e_hi[0] = st.e0_kwh
            window = (
                f"{name} energy window {st.e_min_kwh:.1f}-{st.e_max_kwh:.1f} kWh"
                f" (stored {st.e0_kwh:.1f} kWh now)"
            )
            energy = self.lp.add_vars(
                n + 1,
                e_lo,
                e_hi,
                self._early(kind, n, d.cap.cost_per_kwh),
                lambda i: (
                    None
                    if i == 0
                    else Tag(
                        ReasonCode.ENERGY,
                        name,
                        window + ": empty",
                        window + ": full",
                        first + i - 1,
                    )
                ),
            )
            rows = self.lp.add_rows(n, 0.0, 0.0, None)  # physics, never a reason
            self.lp.coef(rows, energy[1:], 1.0)
            self.lp.coef(rows, energy[:-1], -1.0)
            self.lp.coef(rows, pd, self.dt / st.eta_discharge)
            self.lp.coef(rows, pc, -self.dt * st.eta_charge)
            traj = Trajectory(first, np.zeros(n), ((pd, 1.0), (pc, -1.0)), energy)
        else:
            terms: list[tuple[Index, float]] = []
            lowest, highest = _range_texts(d)
            up_room, down_room = np.maximum(hi - nat, 0.0), np.maximum(nat - lo, 0.0)
            if up_room.max(initial=0.0) > EPS:
                up = self.lp.add_vars(n, 0.0, up_room, c, tags(ReasonCode.DER_LIMIT, "", highest))
                terms.append((up, 1.0))
            if down_room.max(initial=0.0) > EPS:
                down = self.lp.add_vars(
                    n, 0.0, down_room, c, tags(ReasonCode.DER_LIMIT, "", lowest)
                )
                terms.append((down, -1.0))
            traj = Trajectory(first, nat.copy(), tuple(terms))
        self._ramp(d, traj, n)
        return traj

    def _early(self, kind: str, n: int, cost_per_kwh: float) -> Floats:
        """A tiny value on the base plan's stored energy before the first reserved up
        interval (a tiny cost before the first down one): pre-charging happens as early as it
        can, leaving slack for what the forecast got wrong. Over the whole horizon it stays
        below a tenth of the wear of storing one kWh, so it never buys extra energy."""
        out = np.zeros(n + 1)
        if kind != "base":
            return out
        eps = 0.1 * cost_per_kwh / max(self.T, 1)
        if self.first["up"] is not None:
            out[1 : self.first["up"] + 1] -= eps
        if self.first["down"] is not None:
            out[1 : self.first["down"] + 1] += eps
        return out

    def _ramp(self, d: DerPlanInput, traj: Trajectory, n: int) -> None:
        """|P_t - P_t-1| <= ramp; a worst-case trajectory starts from the base plan's P in
        the interval before it."""
        if d.ramp_kw is None:
            return
        if d.ramp_kw >= float((d.p_hi - d.p_lo).max(initial=0.0)):
            return  # the ramp can cross the whole range within one interval
        tag = same(ReasonCode.RAMP, d.id, f"{d.id} ramp {d.ramp_kw:.1f} kW per interval")
        if n >= 2:
            step = np.diff(traj.const)
            rows = self.lp.add_rows(
                n - 1, -d.ramp_kw - step, d.ramp_kw - step, tag.series(traj.first + 1)
            )
            for cols, coef in traj.terms:
                self.lp.coef(rows, cols[1:], coef)
                self.lp.coef(rows, cols[:-1], -coef)
        base = self.traj["base"].get(d.id)
        if traj.first > 0 and base is not None:
            k = traj.first
            step0 = float(traj.const[0] - base.const[k - 1])
            row = self.lp.add_rows(1, -d.ramp_kw - step0, d.ramp_kw - step0, tag.at(k))
            for cols, coef in traj.terms:
                self.lp.coef(row, cols[0], coef)
            for cols, coef in base.terms:
                self.lp.coef(row, cols[k - 1], -coef)

    def _needs(self, d: DerPlanInput, kind: str) -> None:
        """EV energy needs hold in every trajectory (intervals before a worst-case
        trajectory begins follow the base plan)."""
        traj, base = self.traj[kind][d.id], self.traj["base"][d.id]
        for need in d.needs:
            if need.last < traj.first:
                continue
            tag = same(
                ReasonCode.ENERGY,
                d.id,
                f"{d.id} must charge {need.energy_kwh:.1f} kWh by departure",
            )
            picks = []
            const = 0.0
            for t in range(need.first, need.last + 1):
                src = traj if t >= traj.first else base
                k = t - src.first
                const += float(src.const[k])
                picks.append((src, k))
            # -sum(P) * dt >= energy  ->  sum(P) <= -energy / dt
            row = self.lp.add_rows(1, -INF, -need.energy_kwh / self.dt - const, tag)
            for src, k in picks:
                for cols, coef in src.terms:
                    self.lp.coef(row, cols[k], coef)

    # -- system rows --------------------------------------------------------------------

    def _sum_rows(
        self,
        kind: str,
        members: Sequence[DerPlanInput],
        fixed_p: Floats,
        lo: Floats,
        hi: Floats,
        tag: Tag,
        penalty: float,
    ) -> None:
        """lo <= fixed_p + sum of the members' P <= hi in every interval of the trajectory,
        with penalised slack on both sides (over: above hi, under: below lo)."""
        first = self.first[kind]
        assert first is not None
        n = self.T - first
        sl = slice(first, self.T)
        const = fixed_p[sl].copy()
        trs = [self.traj[kind][d.id] for d in members if d.id in self.traj[kind]]
        for tr in trs:
            const = const + tr.const
        rows = self.lp.add_rows(n, lo[sl] - const, hi[sl] - const, tag.series(first))
        for tr in trs:
            for cols, coef in tr.terms:
                self.lp.coef(rows, cols, coef)
        over = self.lp.add_vars(n, 0.0, INF, penalty, tag.series(first))
        under = self.lp.add_vars(n, 0.0, INF, penalty, tag.series(first))
        self.lp.coef(rows, over, -1.0)
        self.lp.coef(rows, under, 1.0)
        self.slacks += [(over, tag, first, True), (under, tag, first, False)]

    def build(self) -> None:
        inp = self.inp
        zeros = np.zeros(self.T)
        for kind in ("base", "up", "down"):
            first = self.first[kind]
            if first is None:
                continue
            for d in self.ctrl:
                self.traj[kind][d.id] = self._der(d, kind, first)
            for d in self.ctrl:
                self._needs(d, kind)
            if kind != "base":
                self._tie_energy(kind, first)
            # coupling point: pcc = other - sum(P) within [-export, import]
            fixed = zeros + sum((d.nat_clipped for d in self.fixed), zeros)
            pcc_tag = Tag(
                ReasonCode.COUPLING_POINT,
                "coupling point",
                f"coupling point import limit {inp.grid.import_kw:g} kW",
                f"coupling point export limit {inp.grid.export_kw:g} kW",
            )
            self._sum_rows(
                kind,
                self.ctrl,
                fixed,
                inp.other_p - inp.grid.import_kw,
                inp.other_p + inp.grid.export_kw,
                pcc_tag,
                M_LIMIT,
            )
            for line in inp.grid.internal:
                members = [d for d in self.ctrl if d.id in line.ders]
                fixed_line = zeros + sum(
                    (d.nat_clipped for d in self.fixed if d.id in line.ders), zeros
                )
                tag = Tag(
                    ReasonCode.INTERNAL_LIMIT,
                    line.id,
                    f"{line.id} import limit {line.import_limit_kw:g} kW",
                    f"{line.id} export limit {line.export_limit_kw:g} kW",
                )
                self._sum_rows(
                    kind,
                    members,
                    fixed_line,
                    zeros - line.import_limit_kw,
                    zeros + line.export_limit_kw,
                    tag,
                    M_LIMIT,
                )
            for res in inp.reserves:
                self._standing(kind, res)
        self._coupling()

    def _tie_energy(self, kind: str, first: int) -> None:
        for d in self.ctrl:
            tr, base = self.traj[kind][d.id], self.traj["base"][d.id]
            if tr.energy is None or base.energy is None:
                continue
            row = self.lp.add_rows(1, 0.0, 0.0, None)
            self.lp.coef(row, tr.energy[0], 1.0)
            self.lp.coef(row, base.energy[first], -1.0)

    def _standing(self, kind: str, res: HeldReserve) -> None:
        first = self.first[kind]
        assert first is not None
        zeros = np.zeros(self.T)
        members = [d for d in self.inp.ders if d.id in res.ders]
        ctrl = [d for d in members if d.controllable]
        fixed = zeros + sum((d.nat_clipped for d in members if not d.controllable), zeros)
        subject = f"{res.service} {res.id}"
        if res.up_kw > 0:  # sum(p_hi - P) >= up  ->  sum(P) <= sum(p_hi) - up
            cap = sum((d.p_hi for d in members), zeros) - res.up_kw
            text = f"reserve {res.id} ({res.service}) keeps {res.up_kw:g} kW up headroom"
            self._sum_rows(
                kind,
                ctrl,
                fixed,
                zeros - INF,
                np.where(res.active, cap, INF),
                same(ReasonCode.RESERVE, subject, text),
                M_RESERVE,
            )
        if res.down_kw > 0:  # sum(P - p_lo) >= down
            floor = sum((d.p_lo for d in members), zeros) + res.down_kw
            text = f"reserve {res.id} ({res.service}) keeps {res.down_kw:g} kW down headroom"
            self._sum_rows(
                kind,
                ctrl,
                fixed,
                np.where(res.active, floor, -INF),
                zeros + INF,
                same(ReasonCode.RESERVE, subject, text),
                M_RESERVE,
            )
        stores = [d for d in ctrl if d.storage is not None]
        active = res.active[first:]
        if not stores or res.sustain_h <= 0 or not active.any():
            return
        n = self.T - first
        for direction, kw in (("up", res.up_kw), ("down", res.down_kw)):
            if kw <= 0:
                continue
            text = (
                f"reserve {res.id} ({res.service}) keeps the energy to sustain {kw:g} kW "
                f"{direction} for {res.sustain_h * 60:g} min"
            )
            tag = same(ReasonCode.RESERVE, subject, text)
            # up: sum (E - e_min) * eta_d >= kW * h ; down: sum (e_max - E) / eta_c >= kW * h
            const = 0.0
            for d in stores:
                st = d.storage
                assert st is not None
                if direction == "up":
                    const += st.e_min_kwh * st.eta_discharge
                else:
                    const -= st.e_max_kwh / st.eta_charge
            rows = self.lp.add_rows(
                n,
                np.where(active, kw * res.sustain_h + const, -INF),
                INF,
                tag.series(first),
            )
            for d in stores:
                st, tr = d.storage, self.traj[kind][d.id]
                assert st is not None and tr.energy is not None
                coef = st.eta_discharge if direction == "up" else -1.0 / st.eta_charge
                self.lp.coef(rows, tr.energy[1:], coef)
            under = self.lp.add_vars(n, 0.0, INF, M_RESERVE, tag.series(first))
            self.lp.coef(rows, under, 1.0)
            self.slacks.append((under, tag, first, False))

    def _coupling(self) -> None:
        """In reserved intervals the worst-case trajectory differs from the base plan by at
        least the accepted bands: sum_d sign * (P_x - P_base) - sum_r a_r >= 0."""
        self.share: Index | None = None
        if self.candidate is not None:
            up, down = self.bands[self.candidate.id]
            total = float(up.sum() + down.sum())
            self.share = self.lp.add_vars(1, 0.0, 1.0, -W_SHARE * total, None)
        for direction, sign in (("up", 1.0), ("down", -1.0)):
            first = self.first[direction]
            if first is None:
                continue
            n = self.T - first
            k = 0 if direction == "up" else 1
            need = np.zeros(n, bool)
            for bands in self.bands.values():
                need |= bands[k][first:] > EPS
            self._keep_baseline(first, need, sign)
            tag = same(ReasonCode.BAND, "reservation", f"reserved {direction} band")
            rows = self.lp.add_rows(n, np.where(need, 0.0, -INF), INF, tag.series(first))
            for d in self.ctrl:
                for cols, coef in self.traj[direction][d.id].terms:
                    self.lp.coef(rows, cols, sign * coef)
                for cols, coef in self.traj["base"][d.id].terms:
                    self.lp.coef(rows, cols[first:], -sign * coef)
            for res in self.held:
                band = self.bands[res.id][k][first:]
                subject = f"{res.service} {res.id}"
                text = f"reservation {res.id} ({res.service}) {direction} band"
                tag = same(ReasonCode.RESERVE, subject, text)
                is_candidate = self.candidate is not None and res.id == self.candidate.id
                a = self.lp.add_vars(
                    n, 0.0, band, -W_ACCEPT if is_candidate else -M_RESERVE, tag.series(first)
                )
                self.lp.coef(rows, a, -1.0)
                self.accept.setdefault(res.id, {})[direction] = a
                if is_candidate:
                    self._share(a, band)

    def _keep_baseline(self, first: int, need: NDArray[np.bool_], sign: float) -> None:
        """In a reserved interval the base plan may not move the coupling point against the
        band (e.g. charge a battery during an up band to widen its swing): the band is
        bought relative to the natural baseline. Before the period, pre-positioning is fine.
        sign * sum_d (P_base - P_nat) >= 0."""
        used = np.flatnonzero(need)
        if not used.size:
            return
        rows = self.lp.add_rows(used.size, 0.0, INF, None)
        for d in self.ctrl:
            base = self.traj["base"][d.id]
            const = base.const[first + used] - d.nat_clipped[first + used]
            self.lp._row_lo[-1] = self.lp._row_lo[-1] - sign * const
            for cols, coef in base.terms:
                self.lp.coef(rows, cols[first + used], sign * coef)

    def _share(self, accepted: Index, band: Floats) -> None:
        """Every interval of the candidate gets at least the common share of its band."""
        assert self.share is not None
        used = np.flatnonzero(band > EPS)
        rows = self.lp.add_rows(used.size, 0.0, INF, None)
        self.lp.coef(rows, accepted[used], 1.0)
        self.lp.coef(rows, self.share[0], -band[used])


def _range_texts(d: DerPlanInput) -> tuple[str, str]:
    """What the lowest and highest P of a non-storage DER are called in a reason (its
    natural output is never a reason: moving beyond it is what the DER cannot do)."""
    t, i = d.cap.type, d.id
    if t is DerType.PV:
        return f"{i} curtailment to zero", f"{i} available power"
    if t is DerType.LOAD:
        return f"{i} full demand", f"{i} curtailable share {d.cap.curtail_max_pct:g} %"
    if t is DerType.EV_CHARGER:
        return f"{i} fastest charge", f"{i} slowest charge"
    return f"{i} minimum output", f"{i} maximum output"


def schedule(inp: PlanInput, candidate: Reservation | None = None) -> PlanResult:
    """Plan the horizon holding the accepted reservations, the standing reserves and, if
    given, as much of the candidate reservation as fits."""
    b = _Builder(inp, candidate)
    b.build()
    t0 = time.perf_counter()
    sol = b.lp.solve()
    solve_s = time.perf_counter() - t0
    T = b.T
    if not sol.optimal:  # only the energy balances are hard: the input data contradict
        raise SolverError(b.lp.name, "no plan satisfies the DERs' energy data")
    p: dict[str, Floats] = {}
    energy: dict[str, Floats] = {}
    worst: dict[str, dict[str, Floats]] = {"up": {}, "down": {}}
    worst_e: dict[str, dict[str, Floats]] = {"up": {}, "down": {}}
    for d in inp.ders:
        base = b.traj["base"].get(d.id)
        p[d.id] = base.value(sol.x) if base is not None else d.nat_clipped.copy()
        if base is not None and base.energy is not None:
            energy[d.id] = sol.x[base.energy]
        for kind in ("up", "down"):
            tr = b.traj[kind].get(d.id)
            full = p[d.id].copy()
            if tr is not None:
                full[tr.first :] = tr.value(sol.x)
                if tr.energy is not None:
                    ee = np.full(T + 1, np.nan)
                    ee[tr.first :] = sol.x[tr.energy]
                    worst_e[kind][d.id] = ee
            worst[kind][d.id] = full
    pcc = inp.other_p - sum((p[d.id] for d in inp.ders), np.zeros(T))
    accepted: dict[str, tuple[Floats, Floats]] = {}
    for res in b.held:
        got = []
        for kind in ("up", "down"):
            arr = np.zeros(T)
            cols = b.accept.get(res.id, {}).get(kind)
            first = b.first[kind]
            if cols is not None and first is not None:
                arr[first:] = sol.x[cols]
            got.append(np.where(arr > EPS, arr, 0.0))
        accepted[res.id] = (got[0], got[1])
    limiting: tuple[Reason, ...] = ()
    violations = _violations(b, sol.x)
    for res in b.held:
        want_up, want_down = b.bands[res.id]
        got_up, got_down = accepted[res.id]
        short = np.maximum(want_up - got_up, want_down - got_down)
        if short.max(initial=0.0) <= 1e-3:
            continue
        if candidate is not None and res.id == candidate.id:
            hits = [
                Hit(tag, upper)
                for tag, upper in sol.binding(0.2 * W_ACCEPT, 0.5 * M_RESERVE)
                if isinstance(tag, Tag)
                and tag.text(upper)
                and tag.code is not ReasonCode.BAND
                and not (tag.code is ReasonCode.RESERVE and tag.subject.endswith(f" {res.id}"))
            ]
            limiting = group(hits, inp.horizon)
        else:
            text = f"reservation {res.id} ({res.service}) cannot be held in full"
            tag = same(ReasonCode.RESERVE, f"{res.service} {res.id}", text)
            violations += group(
                [Hit(tag.at(int(i)), False) for i in np.flatnonzero(short > 1e-3)], inp.horizon
            )
    floor, ceiling = energy_bounds(inp, p, b.bands)
    return PlanResult(
        energy_floor=floor,
        energy_ceiling=ceiling,
        horizon=inp.horizon,
        p=p,
        natural={d.id: d.nat_clipped for d in inp.ders},
        energy=energy,
        energy_up=worst_e["up"],
        energy_down=worst_e["down"],
        p_up=worst["up"],
        p_down=worst["down"],
        pcc_p=pcc,
        accepted=accepted,
        limiting=limiting,
        violations=violations,
        cost=sol.objective,
        solve_s=solve_s,
        size=(b.lp.num_cols, b.lp.num_rows),
    )


def _violations(b: _Builder, x: Floats) -> tuple[Reason, ...]:
    hits = []
    for cols, tag, first, upper in b.slacks:
        for k in np.flatnonzero(x[cols] > 1e-3):
            hits.append(Hit(tag.at(first + int(k)), upper))
    return group(hits, b.inp.horizon)


def _kept_energy(inp: PlanInput, d: DerPlanInput) -> tuple[float, float]:
    """Stored energy battery d keeps for the standing reserves (above its floor, below its
    ceiling), shared within each reserve by usable capacity."""
    st = d.storage
    assert st is not None
    up = down = 0.0
    for res in inp.reserves:
        if d.id not in res.ders:
            continue
        stores = [x.storage for x in inp.ders if x.id in res.ders and x.storage is not None]
        total = sum(x.e_max_kwh - x.e_min_kwh for x in stores)
        share = (st.e_max_kwh - st.e_min_kwh) / total if total > 0 else 0.0
        up += share * res.up_kw * res.sustain_h / st.eta_discharge
        down += share * res.down_kw * res.sustain_h * st.eta_charge
    return up, down


def energy_bounds(
    inp: PlanInput, p: dict[str, Floats], bands: dict[str, tuple[Floats, Floats]]
) -> tuple[dict[str, Floats], dict[str, Floats]]:
    """Backwards from the horizon's end: the stored energy the batteries need at each
    boundary so that, with every other controllable DER at its limit, they still cover the
    reserved up bands (floor) or can still absorb the down bands (ceiling) that follow.
    Aggregated over the batteries and shared by usable capacity; conservative efficiency."""
    stores = [d for d in inp.ders if d.storage is not None and d.controllable]
    if not stores:
        return {}, {}
    T, dt = inp.horizon.count, inp.horizon.step_h
    zeros = np.zeros(T)
    need_up = sum((b[0] for b in bands.values()), zeros)
    need_down = sum((b[1] for b in bands.values()), zeros)
    others = [d for d in inp.ders if d.controllable and d.storage is None]
    other_up = sum((d.p_hi - p[d.id] for d in others), zeros)
    other_down = sum((p[d.id] - d.p_lo for d in others), zeros)
    base = sum((p[d.id] for d in stores), zeros)
    sts = [d.storage for d in stores if d.storage is not None]
    kept = [
        (
            k[0] + inp.energy_margin * (st.e_max_kwh - st.e_min_kwh),
            k[1] + inp.energy_margin * (st.e_max_kwh - st.e_min_kwh),
        )
        for k, st in zip((_kept_energy(inp, d) for d in stores), sts, strict=True)
    ]
    lo = sum(st.e_min_kwh + k[0] for st, k in zip(sts, kept, strict=True))
    hi = sum(st.e_max_kwh - k[1] for st, k in zip(sts, kept, strict=True))
    eta_d = min(st.eta_discharge for st in sts)
    eta_c = max(st.eta_charge for st in sts)

    def change(power: float) -> float:  # stored energy gained in one interval at `power`
        return -dt * (power / eta_d if power >= 0 else power * eta_c)

    floor, ceiling = np.full(T + 1, lo), np.full(T + 1, max(hi, lo))
    for t in range(T - 1, -1, -1):
        up = float(base[t] + max(need_up[t] - other_up[t], 0.0))
        down = float(base[t] - max(need_down[t] - other_down[t], 0.0))
        floor[t] = min(max(floor[t + 1] - change(up), lo), max(hi, lo))
        ceiling[t] = max(min(ceiling[t + 1] - change(down), max(hi, lo)), lo)
    out_floor, out_ceiling = {}, {}
    usable = sum(st.e_max_kwh - st.e_min_kwh for st in sts) or 1.0
    for d, st, k in zip(stores, sts, kept, strict=True):
        share = (st.e_max_kwh - st.e_min_kwh) / usable
        out_floor[d.id] = st.e_min_kwh + k[0] + (floor - lo) * share
        out_ceiling[d.id] = st.e_max_kwh - k[1] - (max(hi, lo) - ceiling) * share
    return out_floor, out_ceiling
