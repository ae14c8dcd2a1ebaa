"""Reserve Verification: per interval of an activation, what was set, what the baseline
was, what the coupling point measured and how much of the request was delivered.

For each interval k of the grid that the activation covers, over the covered window
[a, b) (the interval cut to the activation's start and end):
  set_k       time mean of the coupling-point set point over [a, b); the first set point
              counts from the activation's start: time before the gateway received or
              resumed it (a restart) counts as asked and not delivered
  baseline_k  the baseline of interval k recorded when the activation started
  measured_k  mean coupling-point P over [a, b): from the energy counters,
              (dE_import - dE_export) / (b - a) with the counters interpolated at a and b,
              where both counters bracket the window and neither a nor b falls in a hole
              of the readings (a gap inside the window is no matter: the counters
              integrate across it); otherwise the time mean of the P samples (each held
              until the next), unless the samples have a hole (the gateway was down, the
              link was cut: a gap longer than HOLE_SPACINGS typical spacings and than
              HOLE_MIN_S): a value is never carried across time nobody measured. An
              interval with no measurement is reported as `unmeasured` in a final
              verification: nothing is claimed.
  requested_k |baseline_k - set_k|; the direction is up when set_k < baseline_k
  delivered_k up: baseline_k - measured_k, down: measured_k - baseline_k (negative when the
              coupling point moved the wrong way)
  percent_k   100 * delivered_k / requested_k (None when less than 0.5 kW was requested)
  energy_k    delivered_k * (b - a) in hours
Q is verified the same way when the activation set Q (reactive counters or Q samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from gateway.flex.baseline import Sample
from gateway.flex.intervals import Horizon
from gateway.flex.model import Reason, Verification, VerifiedInterval

#: below this request (kW / kvar) a percentage says nothing
MIN_REQUEST = 0.5
#: readings further apart than this many typical spacings, and than HOLE_MIN_S, leave a
#: hole (the gateway was down, the link was cut), not a hold
HOLE_SPACINGS = 2.5
HOLE_MIN_S = 2.0
#: source of an interval without any measurement (final verifications report it)
UNMEASURED = "unmeasured"


@dataclass(frozen=True)
class Setpoint:
    """The coupling-point set point in force from `start` until the next one."""

    start: datetime
    p_kw: float | None
    q_kvar: float | None = None


@dataclass(frozen=True)
class Measurements:
    """Coupling-point history over the activation (oldest first)."""

    p: Sequence[Sample] = ()
    q: Sequence[Sample] = ()
    e_import: Sequence[Sample] = ()
    e_export: Sequence[Sample] = ()
    q_import: Sequence[Sample] = ()
    q_export: Sequence[Sample] = ()


@dataclass(frozen=True)
class Baseline:
    """Baseline P (and Q) per interval of a grid, recorded at activation start."""

    horizon: Horizon
    p_kw: tuple[float, ...]
    q_kvar: tuple[float, ...] = field(default=())

    def p_at(self, i: int) -> float:
        return self.p_kw[i]

    def q_at(self, i: int) -> float | None:
        return self.q_kvar[i] if i < len(self.q_kvar) else None


def _arrays(samples: Sequence[Sample], origin: datetime) -> tuple[np.ndarray, np.ndarray]:
    t = np.array([(s[0] - origin).total_seconds() for s in samples], dtype=float)
    v = np.array([s[1] for s in samples], dtype=float)
    ok = np.isfinite(v)
    return t[ok], v[ok]


def _hole(t: np.ndarray, before: np.ndarray, inside: np.ndarray, span: float) -> bool:
    """Whether the samples informing [0, span) leave a hole: a gap longer than
    HOLE_SPACINGS times the series' median spacing and than HOLE_MIN_S (only judged with 3
    samples or more)."""
    if t.size < 3:
        return False
    spacing = float(np.median(np.diff(np.sort(t))))
    if spacing <= 0:
        return False
    edges = [float(t[before[-1]])] if before.size else [0.0]
    edges += [float(t[k]) for k in inside]
    edges.append(span)
    return bool(np.max(np.diff(edges)) > max(HOLE_SPACINGS * spacing, HOLE_MIN_S))


def _in_hole(t: np.ndarray, at: float) -> bool:
    """Whether `at` lies in a hole of the readings (see `_hole`): a counter interpolated
    there spreads the hole's energy evenly, which the real power may not have done."""
    if t.size < 3:
        return False
    spacing = float(np.median(np.diff(t)))
    k = int(np.searchsorted(t, at))
    if k == 0 or k >= t.size or t[k] == at:
        return False
    return bool(t[k] - t[k - 1] > max(HOLE_SPACINGS * spacing, HOLE_MIN_S))


def held_mean(samples: Sequence[Sample], a: datetime, b: datetime) -> float | None:
    """Time mean over [a, b) of samples held until the next one (the last sample before a
    counts from a). None when no sample informs the window, or when the samples leave a
    hole in it (see `_hole`)."""
    t, v = _arrays(samples, a)
    span = (b - a).total_seconds()
    if t.size == 0 or span <= 0:
        return None
    before = np.flatnonzero(t <= 0)
    inside = np.flatnonzero((t > 0) & (t < span))
    if before.size == 0 and inside.size == 0:
        return None
    if _hole(t, before, inside, span):
        return None
    times = [0.0] if before.size else [float(t[inside[0]])]
    values = [float(v[before[-1]])] if before.size else [float(v[inside[0]])]
    for k in inside:
        if float(t[k]) > times[-1]:
            times.append(float(t[k]))
            values.append(float(v[k]))
        else:
            values[-1] = float(v[k])
    edges = np.array([*times, span])
    widths = np.diff(edges)
    return float(np.dot(widths, values) / widths.sum())


def counter_mean(
    imports: Sequence[Sample], exports: Sequence[Sample], a: datetime, b: datetime
) -> float | None:
    """Mean power over [a, b) from two cumulative energy counters (kWh), or None when the
    counters do not bracket the window."""
    hours = (b - a).total_seconds() / 3600
    if hours <= 0:
        return None
    deltas = []
    for series in (imports, exports):
        t, v = _arrays(series, a)
        span = (b - a).total_seconds()
        if t.size < 2 or t[0] > 0 or t[-1] < span:
            return None
        if _in_hole(t, 0.0) or _in_hole(t, span):
            return None  # a guess of when the energy of the hole flowed, not a reading
        deltas.append(float(np.interp(span, t, v) - np.interp(0.0, t, v)))
    return (deltas[0] - deltas[1]) / hours


def _set_mean(setpoints: Sequence[Setpoint], a: datetime, b: datetime, q: bool) -> float | None:
    total, weight = 0.0, 0.0
    for k, sp in enumerate(setpoints):
        value = sp.q_kvar if q else sp.p_kw
        start = max(sp.start, a)
        end = min(setpoints[k + 1].start if k + 1 < len(setpoints) else b, b)
        if value is None or end <= start:
            continue
        w = (end - start).total_seconds()
        total += value * w
        weight += w
    return total / weight if weight > 0 else None


def _delivered(
    baseline: float, setpoint: float, measured: float
) -> tuple[float, float, float | None]:
    requested = baseline - setpoint
    delivered = baseline - measured if requested >= 0 else measured - baseline
    req = abs(requested)
    pct = 100.0 * delivered / req if req >= MIN_REQUEST else None
    return req, delivered, pct


def verify_interval(
    baseline: Baseline,
    i: int,
    start: datetime,
    end: datetime | None,
    setpoints: Sequence[Setpoint],
    meas: Measurements,
) -> VerifiedInterval | None:
    """Interval i of the baseline grid, cut to the activation [start, end)."""
    h = baseline.horizon
    a = max(h.start_of(i), start)
    b = h.end_of(i) if end is None else min(h.end_of(i), end)
    if b <= a:
        return None
    set_p = _set_mean(setpoints, a, b, q=False)
    if set_p is None:
        set_p = baseline.p_at(i)
    measured = counter_mean(meas.e_import, meas.e_export, a, b)
    source = "energy_counters"
    if measured is None:
        measured = held_mean(meas.p, a, b)
        source = "power_samples"
    if measured is None:
        return None
    req, delivered, pct = _delivered(baseline.p_at(i), set_p, measured)
    hours = (b - a).total_seconds() / 3600
    set_q = _set_mean(setpoints, a, b, q=True)
    base_q = baseline.q_at(i)
    meas_q = counter_mean(meas.q_import, meas.q_export, a, b)
    if meas_q is None:
        meas_q = held_mean(meas.q, a, b)
    delivered_q = None
    if set_q is not None and base_q is not None and meas_q is not None:
        # Q up raises the coupling-point Q: delivered in the direction of the request
        delivered_q = meas_q - base_q if set_q >= base_q else base_q - meas_q
    return VerifiedInterval(
        start=h.start_of(i),
        end=h.end_of(i),
        covered_s=(b - a).total_seconds(),
        set_p_kw=set_p,
        baseline_p_kw=baseline.p_at(i),
        measured_p_kw=measured,
        requested_kw=req,
        delivered_kw=delivered,
        delivered_pct=pct,
        delivered_kwh=delivered * hours,
        source=source,
        set_q_kvar=set_q,
        baseline_q_kvar=base_q if set_q is not None else None,
        measured_q_kvar=meas_q if set_q is not None else None,
        delivered_q_kvar=delivered_q,
    )


def verify(
    activation_id: str,
    reservation_id: str | None,
    baseline: Baseline,
    start: datetime,
    end: datetime | None,
    until: datetime,
    setpoints: Sequence[Setpoint],
    meas: Measurements,
    *,
    final: bool,
    note: str = "",
    reasons: tuple[Reason, ...] = (),
) -> Verification:
    """Every interval of the activation that has ended by `until` (all of them, cut at
    `until`, when final)."""
    h = baseline.horizon
    stop = until if end is None else min(end, until)
    if setpoints and setpoints[0].start > start:
        setpoints = [replace(setpoints[0], start=start), *setpoints[1:]]
    out = []
    for i in range(h.count):
        if h.end_of(i) <= start or h.start_of(i) >= stop:
            continue
        if not final and h.end_of(i) > until:
            continue  # still running
        verified = verify_interval(baseline, i, start, stop, setpoints, meas)
        if verified is None and final:
            verified = unmeasured(baseline, i, start, stop, setpoints)
        if verified is not None:
            out.append(verified)
    return Verification(activation_id, reservation_id, tuple(out), final, note, reasons)


def unmeasured(
    baseline: Baseline, i: int, start: datetime, end: datetime, setpoints: Sequence[Setpoint]
) -> VerifiedInterval | None:
    """Interval i without a measurement: what was asked, nothing delivered."""
    h = baseline.horizon
    a, b = max(h.start_of(i), start), min(h.end_of(i), end)
    if b <= a:
        return None
    set_p = _set_mean(setpoints, a, b, q=False)
    base = baseline.p_at(i)
    requested = abs(base - set_p) if set_p is not None else 0.0
    return VerifiedInterval(
        start=h.start_of(i),
        end=h.end_of(i),
        covered_s=(b - a).total_seconds(),
        set_p_kw=base if set_p is None else set_p,
        baseline_p_kw=base,
        measured_p_kw=0.0,
        requested_kw=requested,
        delivered_kw=0.0,
        delivered_pct=0.0,
        delivered_kwh=0.0,
        source=UNMEASURED,
    )
