"""Baseline forecast of one measured series (a DER's P, the coupling point's P or Q) per
interval of a horizon.

Method (documented in docs/flexibility.md):
1. Interval means: the samples of each interval are averaged (the store polls at fixed
   periods, so the sample mean is the time mean).
2. Same-time-of-day profile: for each future interval, the means of the same interval on
   the previous `days` days, weighted w_d = decay**(d-1) (yesterday counts most); days
   without data drop out of the weighted mean.
3. Persistence: the deviation of the latest measurement (mean of the last interval length
   of samples before `now`) from the profile decays into the next intervals as
   exp(-(t_mid - now) / tau), so the first hours follow what is happening now.
4. External forecast (e.g. a PV forecast from a forecast service): where given, the result
   is w * external + (1 - w) * history forecast.
Intervals with no information at all are NaN; the caller decides the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from gateway.flex.intervals import Horizon

Floats = NDArray[np.float64]
Sample = tuple[datetime, float]


class StoredSample(Protocol):
    @property
    def time(self) -> datetime: ...

    @property
    def value(self) -> float | None: ...


class History(Protocol):
    """Stored samples of one point with start <= time < end, oldest first (gateway.store.Store
    implements this)."""

    async def range(self, point: str, start: datetime, end: datetime) -> Sequence[StoredSample]: ...


def pairs(samples: Sequence[StoredSample]) -> list[Sample]:
    """(time, value) of the samples that carry a finite value, at the device's own time
    stamp where the protocol carried one (a meter's load profile), else the gateway's."""
    out = []
    for s in samples:
        if s.value is None or not math.isfinite(float(s.value)):
            continue
        stamp = getattr(s, "source_time", None)
        out.append((stamp if isinstance(stamp, datetime) else s.time, float(s.value)))
    out.sort(key=lambda x: x[0])
    return out


@dataclass(frozen=True)
class ForecastMethod:
    days: int = 7
    day_decay: float = 0.7
    tau: timedelta = timedelta(hours=1)
    external_weight: float = 0.8

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError("forecast needs at least one day of history")
        if not 0 < self.day_decay <= 1:
            raise ValueError(f"day_decay {self.day_decay} outside (0, 1]")
        if not 0 <= self.external_weight <= 1:
            raise ValueError(f"external_weight {self.external_weight} outside [0, 1]")


def _seconds(samples: Sequence[Sample], origin: datetime) -> tuple[Floats, Floats]:
    if not samples:
        return np.zeros(0), np.zeros(0)
    t = np.fromiter(((s[0] - origin).total_seconds() for s in samples), float, len(samples))
    v = np.fromiter((s[1] for s in samples), float, len(samples))
    ok = np.isfinite(v)
    return t[ok], v[ok]


def interval_means(samples: Sequence[Sample], horizon: Horizon) -> Floats:
    """Mean of the samples in each interval of the horizon; NaN where there are none."""
    t, v = _seconds(samples, horizon.start)
    step = horizon.step.total_seconds()
    idx = np.floor(t / step).astype(np.int64)
    inside = (idx >= 0) & (idx < horizon.count)
    sums = np.bincount(idx[inside], weights=v[inside], minlength=horizon.count)
    counts = np.bincount(idx[inside], minlength=horizon.count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _profile(means: Floats, horizon: Horizon, method: ForecastMethod) -> Floats:
    """Weighted same-time-of-day profile for each interval of `horizon`; `means` are the
    interval means of the grid starting `method.days` days before the horizon."""
    per_day = timedelta(days=1) // horizon.step
    acc = np.zeros(horizon.count)
    wsum = np.zeros(horizon.count)
    for d in range(1, method.days + 1):
        offset = (method.days - d) * per_day
        vals = means[offset : offset + horizon.count]
        w = method.day_decay ** (d - 1)
        ok = np.isfinite(vals)
        acc[ok] += w * vals[ok]
        wsum[ok] += w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, acc / np.maximum(wsum, 1e-300), np.nan)


def forecast(
    samples: Sequence[Sample],
    horizon: Horizon,
    now: datetime,
    method: ForecastMethod | None = None,
    external: Sequence[float | None] | None = None,
) -> Floats:
    """Forecast per interval of `horizon` from samples covering the last `method.days` days
    up to `now` (later samples are ignored)."""
    method = method or ForecastMethod()
    samples = [s for s in samples if s[0] <= now]
    past = Horizon(
        horizon.start - timedelta(days=method.days),
        horizon.step,
        method.days * (timedelta(days=1) // horizon.step) + horizon.count,
    )
    means = interval_means(samples, past)
    # only what was known at `now` may inform the profile
    known_until = past.index(now)
    if known_until is not None:
        means[known_until:] = np.nan
    profile = _profile(means, horizon, method)
    result = profile.copy()

    recent = [v for t, v in samples if now - horizon.step < t <= now and math.isfinite(v)]
    if recent:
        last = float(np.mean(recent))
        # the profile where the recent samples lie (their mean time), not where `now` is
        ref = _profile_at(means, past, now - horizon.step / 2, method)
        mids = (
            np.array([(horizon.start_of(i) - now).total_seconds() for i in range(horizon.count)])
            + horizon.step.total_seconds() / 2
        )
        decay = np.exp(-np.maximum(mids, 0.0) / method.tau.total_seconds())
        if np.isfinite(ref):
            result = profile + (last - ref) * decay
        # where no profile exists, persistence alone
        result = np.where(np.isfinite(result), result, last)

    if external is not None:
        if len(external) != horizon.count:
            raise ValueError(
                f"external forecast has {len(external)} values for {horizon.count} intervals"
            )
        ext = np.array([np.nan if x is None else float(x) for x in external])
        w = method.external_weight
        blend = np.where(np.isfinite(result), w * ext + (1 - w) * result, ext)
        result = np.where(np.isfinite(ext), blend, result)
    return result


def _profile_at(means: Floats, past: Horizon, t: datetime, method: ForecastMethod) -> float:
    """The weighted same-time-of-day profile value for the interval containing t."""
    per_day = timedelta(days=1) // past.step
    i = past.index(t)
    if i is None:
        return float("nan")
    acc = wsum = 0.0
    for d in range(1, method.days + 1):
        j = i - d * per_day
        if 0 <= j < means.shape[0] and np.isfinite(means[j]):
            w = method.day_decay ** (d - 1)
            acc += w * float(means[j])
            wsum += w
    return acc / wsum if wsum > 0 else float("nan")
