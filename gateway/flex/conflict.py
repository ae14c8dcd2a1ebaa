"""The conflict check (the paper's open question): before a reservation is accepted or an
activation applied, make sure it does not break another reserved service or an operating
limit of the microgrid. Refuse, or curtail to what fits, with reasons that name the
conflicting service or limit.

Reservation: the plan LP holds every other reservation and standing reserve as a higher
tier than the candidate and accepts the largest common share of the candidate's bands
that fits (then more where it fits). What limited it comes from the binding rows, and each
held service is also tested directly: if dropping it would let more of the candidate in,
it is named as the conflict. Reactive bands are checked against the DERs' reactive
capability at every P their plan range allows and the coupling-point Q limit.

Activation: it must belong to an accepted reservation (unless configured otherwise), lie
in its period, stay within the reserved band around the recorded baseline and within the
coupling-point limits, and not collide with
another running activation; finally the dispatch must be able to reach it without taking
headroom another service keeps. A set point a little beyond the band (`band_margin`) is
curtailed to its edge: the AMS sets it around the baseline of the forecast it received,
and the plan's baseline the band is held around moves with re-planning and measurements.
One further beyond asks for flexibility that was not bought: refused, nothing applied.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from gateway.flex.dispatch import Dispatch
from gateway.flex.intervals import Horizon
from gateway.flex.model import (
    Activation,
    ActivationDecision,
    Band,
    DecisionStatus,
    NotificationDecision,
    Reason,
    ReasonCode,
    Reservation,
)
from gateway.flex.schedule import GridLimits, PlanInput, PlanResult, bands_on, schedule

Floats = NDArray[np.float64]
#: a conflict is named when dropping the service lets this much more in (kW summed)
NAMED_GAIN_KW = 0.5
TOLERANCE_KW = 0.05
#: share of the band's width a set point may lie beyond it and still be curtailed to the
#: edge (the baseline drift between the AMS's forecast and the plan); at least MIN_MARGIN
BAND_MARGIN_SHARE = 0.25
MIN_MARGIN = 1.0


def band_margin(lo: float, hi: float) -> float:
    return max(MIN_MARGIN, BAND_MARGIN_SHARE * (hi - lo))


def _total(accepted: tuple[Floats, Floats]) -> float:
    return float(accepted[0].sum() + accepted[1].sum())


def _q_capacity(inp: PlanInput) -> tuple[Floats, Floats]:
    """Reactive range (down, up) at the coupling point every interval, valid at any P the
    DERs may take; net of the reactive bands already sold."""
    T = inp.horizon.count
    up, down = np.zeros(T), np.zeros(T)
    for d in inp.ders:
        for t in range(T):
            lo, hi = d.cap.q_range_over(float(d.p_lo[t]), float(d.p_hi[t]))
            up[t] += max(d.q_base - lo, 0.0)  # DER absorbs -> coupling-point Q rises
            down[t] += max(hi - d.q_base, 0.0)
    for res in inp.reservations:
        for band in res.bands:
            for t in range(T):
                if band.start < inp.horizon.end_of(t) and inp.horizon.start_of(t) < band.end:
                    up[t] -= band.q_up_kvar
                    down[t] -= band.q_down_kvar
    return np.maximum(up, 0.0), np.maximum(down, 0.0)


def _accepted_bands(
    candidate: Reservation,
    horizon: Horizon,
    p: tuple[Floats, Floats],
    q: tuple[Floats, Floats],
) -> tuple[Band, ...]:
    out = []
    for band in candidate.bands:
        idx = [
            i
            for i in range(horizon.count)
            if band.start < horizon.end_of(i) and horizon.start_of(i) < band.end
        ]
        if not idx:
            out.append(replace(band, p_up_kw=0.0, p_down_kw=0.0, q_up_kvar=0.0, q_down_kvar=0.0))
            continue
        out.append(
            replace(
                band,
                p_up_kw=min(band.p_up_kw, float(min(p[0][i] for i in idx))),
                p_down_kw=min(band.p_down_kw, float(min(p[1][i] for i in idx))),
                q_up_kvar=min(band.q_up_kvar, float(min(q[0][i] for i in idx))),
                q_down_kvar=min(band.q_down_kvar, float(min(q[1][i] for i in idx))),
            )
        )
    return tuple(out)


def _fits(a: float, b: float) -> bool:
    return a <= b + 1e-3


@dataclass(frozen=True)
class NotificationCheck:
    decision: NotificationDecision
    #: the plan with the accepted part held (None when refused)
    plan: PlanResult | None


def check_notification(inp: PlanInput, candidate: Reservation, now: datetime) -> NotificationCheck:
    """Decide on a Reserve Notification; `inp` holds the reservations already accepted."""
    h = inp.horizon
    if candidate.end <= now:
        reason = Reason(ReasonCode.PERIOD, candidate.id, "the reserved period is already over")
        return NotificationCheck(
            NotificationDecision(candidate.id, DecisionStatus.REFUSED, None, (reason,)), None
        )
    reasons: list[Reason] = []
    if candidate.end > h.end or candidate.start < h.start:
        reasons.append(
            Reason(
                ReasonCode.PERIOD,
                candidate.id,
                f"only the part within the planning horizon {h.start:%Y-%m-%d %H:%M}-"
                f"{h.end:%Y-%m-%d %H:%M} UTC can be held",
            )
        )
    plan = schedule(inp, candidate)
    want = bands_on(candidate, h)
    got = plan.accepted[candidate.id]
    reasons += plan.limiting
    if not (
        _fits(float((want[0] - got[0]).max(initial=0)), 0)
        and _fits(float((want[1] - got[1]).max(initial=0)), 0)
    ):
        reasons += _named_conflicts(inp, candidate, _total(got))
    q_up_cap, q_down_cap = _q_capacity(inp)
    q_lim = inp.grid.q_kvar
    q_up = np.zeros(h.count)
    q_down = np.zeros(h.count)
    for band in candidate.bands:
        for t in range(h.count):
            if band.start < h.end_of(t) and h.start_of(t) < band.end:
                q_up[t] = max(q_up[t], band.q_up_kvar)
                q_down[t] = max(q_down[t], band.q_down_kvar)
    q_up_ok = np.minimum(q_up, q_up_cap)
    q_down_ok = np.minimum(q_down, q_down_cap)
    if (q_up_ok < q_up - 1e-3).any() or (q_down_ok < q_down - 1e-3).any():
        reasons.append(
            Reason(
                ReasonCode.REACTIVE,
                "reactive capability",
                "the DERs' reactive capability is smaller than the reactive band",
            )
        )
    if q_lim is not None:
        over_up = np.minimum(q_up_ok, q_lim)
        over_down = np.minimum(q_down_ok, q_lim)
        if (over_up < q_up_ok - 1e-3).any() or (over_down < q_down_ok - 1e-3).any():
            reasons.append(
                Reason(
                    ReasonCode.COUPLING_POINT,
                    "coupling point",
                    f"coupling point Q limit {q_lim:g} kvar",
                )
            )
        q_up_ok, q_down_ok = over_up, over_down
    bands = _accepted_bands(candidate, h, got, (q_up_ok, q_down_ok))
    requested = sum(b.p_up_kw + b.p_down_kw + b.q_up_kvar + b.q_down_kvar for b in candidate.bands)
    granted = sum(b.p_up_kw + b.p_down_kw + b.q_up_kvar + b.q_down_kvar for b in bands)
    if granted <= 1e-3:
        status = DecisionStatus.REFUSED
    elif granted >= requested - 1e-3:
        status, reasons = DecisionStatus.ACCEPTED, []
    else:
        status = DecisionStatus.CURTAILED
    accepted = None if status is DecisionStatus.REFUSED else replace(candidate, bands=bands)
    decision = NotificationDecision(candidate.id, status, accepted, tuple(_unique(reasons)))
    return NotificationCheck(decision, None if accepted is None else plan)


def _unique(reasons: Sequence[Reason]) -> list[Reason]:
    seen: dict[tuple[ReasonCode, str, str], Reason] = {}
    for r in reasons:
        seen.setdefault((r.code, r.subject, r.message), r)
    return list(seen.values())


def _named_conflicts(inp: PlanInput, candidate: Reservation, accepted_kw: float) -> list[Reason]:
    """Each held service whose absence would let more of the candidate in."""
    return [
        reason
        for reason, without in _held_services(inp)
        if _total(schedule(without, candidate).accepted[candidate.id]) - accepted_kw > NAMED_GAIN_KW
    ]


def _held_services(inp: PlanInput) -> Iterator[tuple[Reason, PlanInput]]:
    """Each service the plan holds (standing reserves, accepted reservations): the reason
    that names it as a conflict, and the plan input without it."""
    for res in inp.reserves:
        yield (
            Reason(
                ReasonCode.RESERVE,
                f"{res.service} {res.id}",
                f"conflicts with reserve {res.id} ({res.service}) on {', '.join(res.ders)}",
            ),
            replace(inp, reserves=tuple(r for r in inp.reserves if r.id != res.id)),
        )
    for held in inp.reservations:
        yield (
            Reason(
                ReasonCode.RESERVE,
                f"{held.service} {held.id}",
                f"conflicts with reservation {held.id} ({held.service}) already accepted",
            ),
            replace(inp, reservations=tuple(r for r in inp.reservations if r.id != held.id)),
        )


# -- activations ----------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """Where an activation's set point may go in one interval (coupling-point P)."""

    baseline_p_kw: float
    p_min_kw: float
    p_max_kw: float
    q_min_kvar: float | None = None
    q_max_kvar: float | None = None


def envelope(
    reservation: Reservation,
    plan_pcc: Floats,
    horizon: Horizon,
    i: int,
    grid: GridLimits,
    q_base: float = 0.0,
) -> Envelope:
    """The reserved band of interval i around the plan's baseline, within the coupling-point
    limits."""
    t = horizon.start_of(i)
    band = reservation.band_at(t) or reservation.band_at(t + horizon.step / 2)
    base = float(plan_pcc[i])
    up = band.p_up_kw if band else 0.0
    down = band.p_down_kw if band else 0.0
    q_up = band.q_up_kvar if band else 0.0
    q_down = band.q_down_kvar if band else 0.0
    return Envelope(
        baseline_p_kw=base,
        p_min_kw=max(base - up, -grid.export_kw),
        p_max_kw=min(base + down, grid.import_kw),
        q_min_kvar=q_base - q_down,
        q_max_kvar=q_base + q_up,
    )


def clamp_setpoint(
    act: Activation, env: Envelope
) -> tuple[float | None, float | None, list[Reason], bool]:
    """The set point within the band, the reasons it was moved, and whether it lay beyond
    the band by more than `band_margin` (then the activation is refused)."""
    reasons = []
    beyond = False
    p = act.p_kw
    if p is not None and not env.p_min_kw - 1e-6 <= p <= env.p_max_kw + 1e-6:
        clamped = min(max(p, env.p_min_kw), env.p_max_kw)
        beyond = abs(p - clamped) > band_margin(env.p_min_kw, env.p_max_kw)
        reasons.append(
            Reason(
                ReasonCode.BAND,
                act.reservation_id or act.id,
                f"set point {p:g} kW lies outside the reserved band "
                f"{env.p_min_kw:.1f}..{env.p_max_kw:.1f} kW around the baseline "
                f"{env.baseline_p_kw:.1f} kW"
                + (
                    f", more than {band_margin(env.p_min_kw, env.p_max_kw):.1f} kW beyond it"
                    if beyond
                    else f"; following {clamped:.1f} kW"
                ),
            )
        )
        p = clamped
    q = act.q_kvar
    q_lo, q_hi = env.q_min_kvar, env.q_max_kvar
    outside = q_lo is not None and q_hi is not None and not q_lo - 1e-6 <= (q or 0.0) <= q_hi + 1e-6
    if q is not None and q_lo is not None and q_hi is not None and outside:
        clamped = min(max(q, q_lo), q_hi)
        # without a reactive band the Q part is dropped (see check_activation), not refused
        q_beyond = q_hi > q_lo and abs(q - clamped) > band_margin(q_lo, q_hi)
        beyond = beyond or q_beyond
        reasons.append(
            Reason(
                ReasonCode.BAND,
                act.reservation_id or act.id,
                f"Q set point {q:g} kvar lies outside the reserved band "
                f"{q_lo:.1f}..{q_hi:.1f} kvar"
                + (
                    f", more than {band_margin(q_lo, q_hi):.1f} kvar beyond it"
                    if q_beyond
                    else f"; following {clamped:.1f} kvar"
                ),
            )
        )
        q = clamped
    return p, q, reasons, beyond


def find_reservation(act: Activation, reservations: Sequence[Reservation]) -> Reservation | None:
    if act.reservation_id is not None:
        return next((r for r in reservations if r.id == act.reservation_id), None)
    return next((r for r in reservations if r.start <= act.start < r.end), None)


def check_activation(
    act: Activation,
    now: datetime,
    reservation: Reservation | None,
    running: Activation | None,
    env: Envelope | None,
    trial: Dispatch | None,
    allow_unreserved: bool,
) -> ActivationDecision:
    """Decide on a Reserve Activation. `env` is the envelope of the interval the activation
    starts in (None when no reservation covers it), `trial` a dispatch of the clamped set
    point on the current measurements, `running` the activation in force, if any.

    In order: refusals that need no numbers (period over, no reservation, outside it,
    another activation in force), then the set point clamped to the band (refused when far
    beyond it), then what the DERs can reach now (refused when nothing of the change)."""

    def refused(reasons: Sequence[Reason]) -> ActivationDecision:
        unique = tuple(_unique(reasons))
        return ActivationDecision(act.id, DecisionStatus.REFUSED, None, None, unique)

    first = (
        _period_over(act, now)
        or _unreserved(act, reservation, allow_unreserved)
        or _outside_reservation(act, reservation)
        or _another_in_force(act, reservation, running)
    )
    if first is not None:
        return refused([first])
    reasons = _partly_reserved(act, reservation)
    p, q = act.p_kw, act.q_kvar
    if env is not None:
        p, q, clamp_reasons, beyond = clamp_setpoint(act, env)
        if beyond:
            return refused(clamp_reasons)
        reasons += clamp_reasons
        if act.q_kvar is not None and env.q_max_kvar == env.q_min_kvar:
            q = None  # no reactive band: the Q part is dropped
    if trial is not None and not trial.met:
        reasons += trial.reasons or (
            Reason(ReasonCode.DER_LIMIT, "microgrid", "the DERs cannot reach the set point now"),
        )
        if _nothing_reachable(p, env, trial):
            return refused(reasons)
    if p is None and q is None:
        return refused(reasons)
    status = DecisionStatus.CURTAILED if reasons else DecisionStatus.ACCEPTED
    return ActivationDecision(act.id, status, p, q, tuple(_unique(reasons)))


def _period_over(act: Activation, now: datetime) -> Reason | None:
    if act.end is not None and act.end <= now:
        return Reason(ReasonCode.PERIOD, act.id, "the activation period is already over")
    return None


def _unreserved(
    act: Activation, reservation: Reservation | None, allow_unreserved: bool
) -> Reason | None:
    if reservation is not None or allow_unreserved:
        return None
    named = act.reservation_id
    what = f"reservation {named!r}" if named else "an accepted reservation"
    return Reason(
        ReasonCode.NO_RESERVATION,
        act.reservation_id or act.id,
        f"no {what} covers this activation",
    )


def _reserved_period(reservation: Reservation) -> str:
    return f"{reservation.start:%H:%M}-{reservation.end:%H:%M} UTC"


def _outside_reservation(act: Activation, reservation: Reservation | None) -> Reason | None:
    if reservation is None:
        return None
    if act.start >= reservation.end or (act.end is not None and act.end <= reservation.start):
        return Reason(
            ReasonCode.PERIOD,
            reservation.id,
            f"outside the reserved period {_reserved_period(reservation)}",
        )
    return None


def _partly_reserved(act: Activation, reservation: Reservation | None) -> list[Reason]:
    """The activation is held only where it overlaps the reservation."""
    if reservation is None:
        return []
    if act.start < reservation.start or act.end is None or act.end > reservation.end:
        return [
            Reason(
                ReasonCode.PERIOD,
                reservation.id,
                f"held only within the reserved period {_reserved_period(reservation)}",
            )
        ]
    return []


def _another_in_force(
    act: Activation, reservation: Reservation | None, running: Activation | None
) -> Reason | None:
    """An activation of another reservation already steers the coupling point."""
    if running is None or running.id == act.id:
        return None
    if running.reservation_id == (reservation.id if reservation else None):
        return None
    return Reason(
        ReasonCode.RESERVE,
        running.reservation_id or running.id,
        f"the coupling point already follows activation {running.id} of "
        f"reservation {running.reservation_id}",
    )


def _nothing_reachable(p: float | None, env: Envelope | None, trial: Dispatch) -> bool:
    """The DERs reach none of the asked change of coupling-point P away from the baseline."""
    if env is None or p is None:
        return False
    reachable = p - trial.shortfall_p_kw
    asked = abs(p - env.baseline_p_kw)
    toward = (reachable - env.baseline_p_kw) * (p - env.baseline_p_kw) > 0
    got = abs(reachable - env.baseline_p_kw) if toward else 0.0
    return asked > TOLERANCE_KW and got < TOLERANCE_KW
