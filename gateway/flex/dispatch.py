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
    problem = _Problem(inp)
    for d in inp.ders:
        if not d.held and d.p_hi - d.p_lo > 1e-9:
            problem.add_p(d)
    for d in inp.ders:
        if not d.held and d.cap.q_controllable:
            problem.add_q(d)
    problem.add_coupling_point_limits()
    problem.add_tracking()
    problem.add_internal_lines()
    for keep in inp.keep:
        problem.add_headroom(keep)
    return problem.solve()


class _Problem:
    """The dispatch LP as it is built, one named step at a time: a column for each movable
    DER's P and Q, then soft rows (coupling point, set point, internal lines, headroom)
    whose slacks tell which limit had to give."""

    def __init__(self, inp: DispatchInput) -> None:
        self.inp = inp
        self.lp = Lp("activation dispatch")
        self.p_col: dict[str, int] = {}
        self.q_col: dict[str, int] = {}
        #: (column, tag, whether it relaxes the upper side)
        self.slacks: list[tuple[int, Tag, bool]] = []
        self.by_id = {d.id: d for d in inp.ders}

    def add_p(self, d: DerNow) -> None:
        """P within what the DER reaches now; moving it off its planned P costs."""
        lp = self.lp
        lo, hi = min(d.p_lo, d.p_hi), max(d.p_lo, d.p_hi)
        tag = Tag(ReasonCode.DER_LIMIT, d.id, _lower_text(d), _upper_text(d))
        col = self.p_col[d.id] = int(lp.add_vars(1, lo, hi, 0.0, tag)[0])
        self._deviation(col, min(max(d.p_base, lo), hi), d.cap.cost_per_kwh)
        ahead = same(
            ReasonCode.ENERGY, d.id, f"{d.id} energy kept for the reserved intervals ahead"
        )
        if d.keep_hi is not None and d.keep_hi < hi:
            row = lp.add_rows(1, -INF, max(d.keep_hi, lo), ahead)
            over = lp.add_vars(1, 0.0, INF, W_ENERGY_AHEAD, ahead)
            lp.coef(row, [col, over[0]], [1.0, -1.0])
        if d.keep_lo is not None and d.keep_lo > lo:
            row = lp.add_rows(1, min(d.keep_lo, hi), INF, ahead)
            under = lp.add_vars(1, 0.0, INF, W_ENERGY_AHEAD, ahead)
            lp.coef(row, [col, under[0]], [1.0, 1.0])

    def add_q(self, d: DerNow) -> None:
        """Q within the DER's reactive polygon (at its P column, or at its measured P)."""
        lp = self.lp
        q_lo, q_hi = d.cap.q_bounds()
        tag = same(ReasonCode.REACTIVE, d.id, f"{d.id} reactive capability")
        col = self.q_col[d.id] = int(lp.add_vars(1, q_lo, q_hi, 0.0, tag)[0])
        self._deviation(col, d.q_base, Q_COST)
        p_col = self.p_col.get(d.id)
        p_lo, p_hi = (d.p_lo, d.p_hi) if p_col is not None else (d.p_kw, d.p_kw)
        for facet in d.cap.facets(p_lo, p_hi):
            if p_col is not None:
                row = lp.add_rows(1, -INF, facet.c, tag)
                lp.coef(row, [p_col, col], [facet.a, facet.b])
            else:
                row = lp.add_rows(1, -INF, facet.c - facet.a * d.p_kw, tag)
                lp.coef(row, col, facet.b)

    def _deviation(self, col: int, base: float, cost: float) -> None:
        """|x - base| split into two priced parts: x - plus + minus = base."""
        plus = self.lp.add_vars(1, 0.0, INF, cost, None)
        minus = self.lp.add_vars(1, 0.0, INF, cost, None)
        row = self.lp.add_rows(1, base, base, None)
        self.lp.coef(row, [col, plus[0], minus[0]], [1.0, -1.0, 1.0])

    # pcc_p = pcc_meas - sum(P - P_meas)  ->  pcc_p = p_off - sum(P), p_off = pcc_meas + sum(P_meas)
    @property
    def p_off(self) -> float:
        return self.inp.pcc_p_kw + sum(d.p_kw for d in self.inp.ders if d.id in self.p_col)

    @property
    def q_off(self) -> float:
        return self.inp.pcc_q_kvar + sum(d.q_kvar for d in self.inp.ders if d.id in self.q_col)

    def _soft(
        self, cols: dict[str, int], off: float, lo: float, hi: float, tag: Tag, penalty: float
    ) -> None:
        """lo <= off - sum(cols) <= hi, softly (slack recorded with the side it relaxes)."""
        lp = self.lp
        row = lp.add_rows(1, off - hi, off - lo, tag)
        if cols:
            lp.coef(row, list(cols.values()), 1.0)
        slack = lp.add_vars(2, 0.0, INF, penalty, tag)
        lp.coef(row, slack, [1.0, -1.0])
        # the first lifts the row over its lower bound (off - sum above hi), the second
        # pulls it under its upper bound
        self.slacks.extend([(int(slack[0]), tag, False), (int(slack[1]), tag, True)])

    def add_coupling_point_limits(self) -> None:
        grid = self.inp.grid
        # the row's lower side is the coupling point at its import limit, the upper at export
        pcc_tag = Tag(
            ReasonCode.COUPLING_POINT,
            "coupling point",
            f"coupling point import limit {grid.import_kw:g} kW",
            f"coupling point export limit {grid.export_kw:g} kW",
        )
        self._soft(self.p_col, self.p_off, -grid.export_kw, grid.import_kw, pcc_tag, M_LIMIT)
        if grid.q_kvar is not None:
            q_tag = same(
                ReasonCode.COUPLING_POINT,
                "coupling point",
                f"coupling point Q limit {grid.q_kvar:g} kvar",
            )
            self._soft(self.q_col, self.q_off, -grid.q_kvar, grid.q_kvar, q_tag, M_LIMIT)

    def add_tracking(self) -> None:
        """The set point, as softly as its weight tier says."""
        track = same(ReasonCode.BAND, "", "")  # the set point itself is never a reason
        p, q = self.inp.target_p_kw, self.inp.target_q_kvar
        if p is not None:
            self._soft(self.p_col, self.p_off, p, p, track, W_TRACK)
        if q is not None:
            self._soft(self.q_col, self.q_off, q, q, track, W_TRACK_Q)

    def add_internal_lines(self) -> None:
        for line in self.inp.grid.internal:
            members = {i: c for i, c in self.p_col.items() if i in line.ders}
            fixed = sum(
                d.p_kw for d in self.inp.ders if d.id in line.ders and d.id not in self.p_col
            )
            tag = Tag(
                ReasonCode.INTERNAL_LIMIT,
                line.id,
                f"{line.id} import limit {line.import_limit_kw:g} kW",
                f"{line.id} export limit {line.export_limit_kw:g} kW",
            )
            # flow = fixed + sum(P) in [-import, export] <=> -fixed - sum(P) in [-export, import]
            self._soft(members, -fixed, -line.export_limit_kw, line.import_limit_kw, tag, M_LIMIT)

    def add_headroom(self, keep: Headroom) -> None:
        """A held service's up headroom sum(hi - P) >= up and down headroom
        sum(P - lo) >= down on its DERs, softly at the reserve tier."""
        kept = [self.by_id[i] for i in keep.ders if i in self.by_id]
        cols = {d.id: self.p_col[d.id] for d in kept if d.id in self.p_col}
        fixed = sum(d.p_kw for d in kept if d.id not in cols)
        subject = f"{keep.service} {keep.id}"
        if keep.up_kw > 0:
            hi_sum = sum(d.p_hi for d in kept) - fixed
            text = f"{keep.service} {keep.id} keeps {keep.up_kw:g} kW up headroom"
            tag = same(ReasonCode.RESERVE, subject, text)
            self._one_sided(cols, -INF, hi_sum - keep.up_kw, -1.0, tag)
        if keep.down_kw > 0:
            lo_sum = sum(d.p_lo for d in kept) - fixed
            text = f"{keep.service} {keep.id} keeps {keep.down_kw:g} kW down headroom"
            tag = same(ReasonCode.RESERVE, subject, text)
            self._one_sided(cols, lo_sum + keep.down_kw, INF, 1.0, tag)

    def _one_sided(self, cols: dict[str, int], lo: float, hi: float, sign: float, tag: Tag) -> None:
        """lo <= sum(cols) <= hi, one side relaxed by a slack of coefficient `sign`."""
        row = self.lp.add_rows(1, lo, hi, tag)
        if cols:
            self.lp.coef(row, list(cols.values()), 1.0)
        slack = self.lp.add_vars(1, 0.0, INF, M_RESERVE, tag)
        self.lp.coef(row, slack[0], sign)
        self.slacks.append((int(slack[0]), tag, False))

    def solve(self) -> Dispatch:
        inp = self.inp
        p_off, q_off = self.p_off, self.q_off
        sol = self.lp.solve(time_limit_s=5.0)
        x = sol.x
        p = {d.id: float(x[self.p_col[d.id]]) if d.id in self.p_col else d.p_kw for d in inp.ders}
        q = {d.id: float(x[self.q_col[d.id]]) if d.id in self.q_col else d.q_kvar for d in inp.ders}
        pcc_p = p_off - sum(p[i] for i in self.p_col)
        pcc_q = q_off - sum(q[i] for i in self.q_col)
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
                for col, tag, upper in self.slacks
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
