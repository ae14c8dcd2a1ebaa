"""Activation dispatch: DER set points that bring the coupling point to its P/Q set point
now, at least cost and wear, within every limit. Solved again every control cycle on fresh
measurements, which closes the loop: the prediction is the measured coupling point plus
the change of the DERs, so load and PV drift show up as a residual the next cycle removes.

LP (HiGHS), one snapshot:
  variables  P_d in [lo_d, hi_d], Q_d in the DER's reactive polygon, |P_d - base_d| split
  pcc_p = pcc_p_measured - sum_d (P_d - P_d_measured)       (coupling point P > 0 imports)
  pcc_q = pcc_q_measured - sum_d (Q_d - Q_d_measured)
  objective tiers: coupling-point / line limit slack 1e6/kW > standing reserve and other
  reservation headroom 1e4/kW > set-point shortfall 1e2/kW > a battery's energy meant for
  the reserved intervals ahead 2/kW > cost_per_kwh * |P - base|.
Whatever the DERs cannot reach stays as shortfall; the binding limits in the tracking tier
say why. A DER whose set point is its own controller's business (distributed manner) takes
part in the first solve and is then held at its measurement (`held`): the loop corrects
with the centralized DERs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import DerType
from gateway.flex.capability import DerCapability
from gateway.flex.lp import INF, Lp
from gateway.flex.model import Reason, ReasonCode
from gateway.flex.reasons import Hit, Tag, group, same
from gateway.flex.schedule import GridLimits

M_LIMIT = 1e6
M_RESERVE = 1e4
W_TRACK = 1e2
W_TRACK_Q = 1e1
#: per kW of a battery beyond its preferred range (energy meant for later intervals)
W_ENERGY_AHEAD = 2.0
#: cost of moving Q by 1 kvar, relative to P (reactive power is nearly free, not quite)
Q_COST = 1e-4


@dataclass(frozen=True)
class DerNow:
    cap: DerCapability
    p_kw: float
    q_kvar: float
    #: reachable P now (the caller folds in energy: what the storage sustains to the end)
    p_lo: float
    p_hi: float
    #: the planned P it returns to; deviation from it costs
    p_base: float
    q_base: float = 0.0
    #: supervised only (a distributed DER that already has its target)
    held: bool = False
    #: a battery's preferred range: within it the energy the reserved intervals ahead need
    #: stays stored; leaving it costs more than any DER but less than missing the set point
    keep_lo: float | None = None
    keep_hi: float | None = None

    @property
    def id(self) -> str:
        return self.cap.id


@dataclass(frozen=True)
class Headroom:
    """A service that must keep up/down headroom on a set of DERs right now."""

    id: str
    service: str
    ders: tuple[str, ...]
    up_kw: float
    down_kw: float


@dataclass(frozen=True)
class DispatchInput:
    ders: tuple[DerNow, ...]
    pcc_p_kw: float
    pcc_q_kvar: float
    target_p_kw: float | None
    target_q_kvar: float | None
    grid: GridLimits
    keep: tuple[Headroom, ...] = ()


@dataclass(frozen=True)
class Dispatch:
    p: dict[str, float]
    q: dict[str, float]
    #: predicted coupling point after the set points take effect
    pcc_p_kw: float
    pcc_q_kvar: float
    #: set point minus what is reachable (0 when met)
    shortfall_p_kw: float
    shortfall_q_kvar: float
    reasons: tuple[Reason, ...]
    #: limits the dispatch had to break (only when the measurement was beyond them already)
    violations: tuple[Reason, ...] = ()

    @property
    def met(self) -> bool:
        return abs(self.shortfall_p_kw) < 0.05 and abs(self.shortfall_q_kvar) < 0.05


def dispatch(inp: DispatchInput) -> Dispatch:
    lp = Lp("activation dispatch")
    movable = [d for d in inp.ders if not d.held and d.p_hi - d.p_lo > 1e-9]
    q_movable = [d for d in inp.ders if not d.held and d.cap.q_controllable]
    p_col: dict[str, int] = {}
    q_col: dict[str, int] = {}
    for d in movable:
        lo, hi = min(d.p_lo, d.p_hi), max(d.p_lo, d.p_hi)
        tag = Tag(ReasonCode.DER_LIMIT, d.id, _lower_text(d), _upper_text(d))
        p_col[d.id] = int(lp.add_vars(1, lo, hi, 0.0, tag)[0])
        base = min(max(d.p_base, lo), hi)
        plus = lp.add_vars(1, 0.0, INF, d.cap.cost_per_kwh, None)
        minus = lp.add_vars(1, 0.0, INF, d.cap.cost_per_kwh, None)
        row = lp.add_rows(1, base, base, None)  # P - plus + minus = base
        lp.coef(row, [p_col[d.id], plus[0], minus[0]], [1.0, -1.0, 1.0])
        ahead = same(
            ReasonCode.ENERGY, d.id, f"{d.id} energy kept for the reserved intervals ahead"
        )
        if d.keep_hi is not None and d.keep_hi < hi:
            row = lp.add_rows(1, -INF, max(d.keep_hi, lo), ahead)
            over = lp.add_vars(1, 0.0, INF, W_ENERGY_AHEAD, ahead)
            lp.coef(row, [p_col[d.id], over[0]], [1.0, -1.0])
        if d.keep_lo is not None and d.keep_lo > lo:
            row = lp.add_rows(1, min(d.keep_lo, hi), INF, ahead)
            under = lp.add_vars(1, 0.0, INF, W_ENERGY_AHEAD, ahead)
            lp.coef(row, [p_col[d.id], under[0]], [1.0, 1.0])
    for d in q_movable:
        q_lo, q_hi = d.cap.q_bounds()
        tag = same(ReasonCode.REACTIVE, d.id, f"{d.id} reactive capability")
        q_col[d.id] = int(lp.add_vars(1, q_lo, q_hi, 0.0, tag)[0])
        plus = lp.add_vars(1, 0.0, INF, Q_COST, None)
        minus = lp.add_vars(1, 0.0, INF, Q_COST, None)
        row = lp.add_rows(1, d.q_base, d.q_base, None)
        lp.coef(row, [q_col[d.id], plus[0], minus[0]], [1.0, -1.0, 1.0])
        p_lo, p_hi = (d.p_lo, d.p_hi) if d.id in p_col else (d.p_kw, d.p_kw)
        for facet in d.cap.facets(p_lo, p_hi):
            if d.id in p_col:
                row = lp.add_rows(1, -INF, facet.c, tag)
                lp.coef(row, [p_col[d.id], q_col[d.id]], [facet.a, facet.b])
            else:
                row = lp.add_rows(1, -INF, facet.c - facet.a * d.p_kw, tag)
                lp.coef(row, q_col[d.id], facet.b)

    # pcc_p = pcc_meas - sum(P - P_meas)  ->  -sum(P) = pcc_p - pcc_meas - sum(P_meas)
    p_meas = sum(d.p_kw for d in inp.ders if d.id in p_col)
    q_meas = sum(d.q_kvar for d in inp.ders if d.id in q_col)
    p_off = inp.pcc_p_kw + p_meas  # pcc_p = p_off - sum(P)
    q_off = inp.pcc_q_kvar + q_meas

    slacks: list[tuple[int, Tag, bool]] = []

    def pcc_rows(
        cols: dict[str, int], off: float, lo: float, hi: float, tag: Tag, penalty: float
    ) -> None:
        """lo <= off - sum(cols) <= hi, softly (slack recorded with the side it relaxes)."""
        row = lp.add_rows(1, off - hi, off - lo, tag)
        if cols:
            lp.coef(row, list(cols.values()), 1.0)
        slack = lp.add_vars(2, 0.0, INF, penalty, tag)
        lp.coef(row, slack, [1.0, -1.0])
        # the first lifts the row over its lower bound (off - sum above hi), the second
        # pulls it under its upper bound
        slacks.extend([(int(slack[0]), tag, False), (int(slack[1]), tag, True)])

    # the row's lower side is the coupling point at its import limit, the upper at export
    pcc_tag = Tag(
        ReasonCode.COUPLING_POINT,
        "coupling point",
        f"coupling point import limit {inp.grid.import_kw:g} kW",
        f"coupling point export limit {inp.grid.export_kw:g} kW",
    )
    pcc_rows(p_col, p_off, -inp.grid.export_kw, inp.grid.import_kw, pcc_tag, M_LIMIT)
    if inp.grid.q_kvar is not None:
        q_tag = same(
            ReasonCode.COUPLING_POINT,
            "coupling point",
            f"coupling point Q limit {inp.grid.q_kvar:g} kvar",
        )
        pcc_rows(q_col, q_off, -inp.grid.q_kvar, inp.grid.q_kvar, q_tag, M_LIMIT)
    track = same(ReasonCode.BAND, "", "")  # the set point itself is never a reason
    if inp.target_p_kw is not None:
        pcc_rows(p_col, p_off, inp.target_p_kw, inp.target_p_kw, track, W_TRACK)
    if inp.target_q_kvar is not None:
        pcc_rows(q_col, q_off, inp.target_q_kvar, inp.target_q_kvar, track, W_TRACK_Q)
    by_id = {d.id: d for d in inp.ders}
    for line in inp.grid.internal:
        members = {i: c for i, c in p_col.items() if i in line.ders}
        fixed = sum(d.p_kw for d in inp.ders if d.id in line.ders and d.id not in p_col)
        tag = Tag(
            ReasonCode.INTERNAL_LIMIT,
            line.id,
            f"{line.id} import limit {line.import_limit_kw:g} kW",
            f"{line.id} export limit {line.export_limit_kw:g} kW",
        )
        # flow = fixed + sum(P) in [-import, export]  <=>  -fixed - sum(P) in [-export, import]
        pcc_rows(members, -fixed, -line.export_limit_kw, line.import_limit_kw, tag, M_LIMIT)
    for keep in inp.keep:
        kept = [by_id[i] for i in keep.ders if i in by_id]
        cols = {d.id: p_col[d.id] for d in kept if d.id in p_col}
        subject = f"{keep.service} {keep.id}"
        if keep.up_kw > 0:  # sum(hi - P) >= up
            hi_sum = sum(d.p_hi for d in kept) - sum(d.p_kw for d in kept if d.id not in cols)
            tag = same(
                ReasonCode.RESERVE,
                subject,
                f"{keep.service} {keep.id} keeps {keep.up_kw:g} kW up headroom",
            )
            row = lp.add_rows(1, -INF, hi_sum - keep.up_kw, tag)
            if cols:
                lp.coef(row, list(cols.values()), 1.0)
            slack = lp.add_vars(1, 0.0, INF, M_RESERVE, tag)
            lp.coef(row, slack[0], -1.0)
            slacks.append((int(slack[0]), tag, False))
        if keep.down_kw > 0:  # sum(P - lo) >= down
            lo_sum = sum(d.p_lo for d in kept) - sum(d.p_kw for d in kept if d.id not in cols)
            tag = same(
                ReasonCode.RESERVE,
                subject,
                f"{keep.service} {keep.id} keeps {keep.down_kw:g} kW down headroom",
            )
            row = lp.add_rows(1, lo_sum + keep.down_kw, INF, tag)
            if cols:
                lp.coef(row, list(cols.values()), 1.0)
            slack = lp.add_vars(1, 0.0, INF, M_RESERVE, tag)
            lp.coef(row, slack[0], 1.0)
            slacks.append((int(slack[0]), tag, False))

    sol = lp.solve(time_limit_s=5.0)
    x = sol.x
    p = {d.id: (float(x[p_col[d.id]]) if d.id in p_col else d.p_kw) for d in inp.ders}
    q = {d.id: (float(x[q_col[d.id]]) if d.id in q_col else d.q_kvar) for d in inp.ders}
    pcc_p = p_off - sum(p[i] for i in p_col)
    pcc_q = q_off - sum(q[i] for i in q_col)
    short_p = 0.0 if inp.target_p_kw is None else inp.target_p_kw - pcc_p
    short_q = 0.0 if inp.target_q_kvar is None else inp.target_q_kvar - pcc_q
    reasons: tuple[Reason, ...] = ()
    if abs(short_p) > 0.05 or abs(short_q) > 0.05:
        hits = [
            Hit(tag, upper)
            for tag, upper in sol.binding(0.5 * W_TRACK_Q, 0.5 * M_RESERVE)
            if isinstance(tag, Tag) and tag.text(upper) and tag.code is not ReasonCode.BAND
        ]
        reasons = group(hits, None)
    violations = group(
        [
            Hit(tag, upper)
            for col, tag, upper in slacks
            if x[col] > 1e-3 and tag.code is not ReasonCode.BAND
        ],
        None,
    )
    return Dispatch(p, q, pcc_p, pcc_q, short_p, short_q, reasons, violations)


def _upper_text(d: DerNow) -> str:
    match d.cap.type:
        case DerType.PV:
            return f"{d.id} available power {d.p_hi:.1f} kW"
        case DerType.LOAD:
            return f"{d.id} curtailable share {d.cap.curtail_max_pct:g} %"
        case DerType.BATTERY:
            return f"{d.id} discharge limit {d.p_hi:.1f} kW (power or stored energy)"
        case _:
            return f"{d.id} maximum {d.p_hi:.1f} kW"


def _lower_text(d: DerNow) -> str:
    match d.cap.type:
        case DerType.PV:
            return f"{d.id} curtailment to zero"
        case DerType.LOAD:
            return f"{d.id} full demand"
        case DerType.BATTERY:
            return f"{d.id} charge limit {-d.p_lo:.1f} kW (power or free capacity)"
        case _:
            return f"{d.id} minimum {d.p_lo:.1f} kW"
