"""The baseline forecast, including its error on simulated history (fwsim physics with a
random cloud factor per day on the PV and a random level and noise on the load)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gateway.flex import baseline
from gateway.flex.baseline import ForecastMethod, Sample
from gateway.flex.intervals import Horizon
from tests.support.flexsim import Bench, Weather

Q = timedelta(minutes=15)
T0 = datetime(2024, 6, 1, tzinfo=UTC)


def test_interval_means() -> None:
    h = Horizon(T0, Q, 3)
    samples = [(T0 + timedelta(minutes=m), float(m)) for m in (0, 5, 10, 31, 44, 50)]
    means = baseline.interval_means(samples, h)
    assert means[0] == pytest.approx(5.0)
    assert np.isnan(means[1])
    assert means[2] == pytest.approx(37.5)  # 31 and 44; 50 lies in the next interval


def flat_days(days: int, value: float, step: timedelta = Q) -> list[Sample]:
    n = days * (timedelta(days=1) // step)
    return [(T0 + i * step + step / 2, value) for i in range(n)]


def test_recent_deviation_decays_into_the_profile() -> None:
    now = T0 + timedelta(days=7)
    history = [s for s in flat_days(7, 10.0) if s[0] < now - Q]
    recent = [(now - timedelta(minutes=m), 20.0) for m in (10, 5, 0)]
    h = Horizon(now, Q, 96)
    method = ForecastMethod(tau=timedelta(hours=1))
    fc = baseline.forecast(history + recent, h, now, method)
    assert fc[0] == pytest.approx(10 + 10 * np.exp(-0.125), rel=1e-6)  # mid of interval 0
    assert fc[3] == pytest.approx(10 + 10 * np.exp(-0.875), rel=1e-6)
    # far ahead only the profile counts (the last slot would hold the recent samples)
    assert fc[-2] == pytest.approx(10.0, abs=1e-6)


def test_recent_days_weigh_more() -> None:
    old = flat_days(6, 10.0)
    yesterday = [(t + timedelta(days=6), 30.0) for t, _ in flat_days(1, 0.0)]
    now = T0 + timedelta(days=7)
    method = ForecastMethod(day_decay=0.5, tau=timedelta(seconds=1))  # profile only
    fc = baseline.forecast(old + yesterday, Horizon(now, Q, 4), now, method)
    weights = [0.5**d for d in range(7)]
    expected = (30 * weights[0] + 10 * sum(weights[1:])) / sum(weights)
    assert fc == pytest.approx(np.full(4, expected))


def test_external_forecast_blends_where_given_and_future_samples_are_ignored() -> None:
    now = T0 + timedelta(days=7)
    h = Horizon(now, Q, 4)
    history = flat_days(7, 10.0)
    peek = [(now + timedelta(minutes=20), 99.0)]
    method = ForecastMethod(external_weight=0.75)
    fc = baseline.forecast(history + peek, h, now, method, external=[50.0, None, 50.0, None])
    assert fc == pytest.approx([40.0, 10.0, 40.0, 10.0])
    with pytest.raises(ValueError, match="external forecast has 2 values for 4 intervals"):
        baseline.forecast(history, h, now, method, external=[1.0, 2.0])


def test_without_history_persistence_or_nothing() -> None:
    now = T0 + timedelta(days=7)
    h = Horizon(now, Q, 4)
    assert baseline.forecast([(now, 7.0)], h, now) == pytest.approx(np.full(4, 7.0))
    assert np.isnan(baseline.forecast([], h, now)).all()


@pytest.fixture(scope="module")
def simulated() -> Bench:
    bench = Bench(T0, weather=Weather(seed=3), sample_s=300)
    bench.advance(10 * 86400, step=300)
    return bench


def _samples(bench: Bench, point: str, a: datetime, z: datetime) -> list[Sample]:
    rows = asyncio.run(bench.history.range(point, a, z))
    return [(r.time, float(r.value)) for r in rows if r.value is not None]


@pytest.mark.parametrize(
    ("point", "rating"), [("pv1.p", 60.0), ("load1.p", 80.0), ("pcc.p", 100.0)]
)
def test_day_ahead_error_on_simulated_history(simulated: Bench, point: str, rating: float) -> None:
    """Day-ahead forecasts for days 8-10, each from the 7 days before, against what the
    physics then did: mean absolute error in percent of the rating (nMAE), compared with
    persistence of the last value and with yesterday's profile alone."""
    ours, persist, yesterday = [], [], []
    for day in (7, 8, 9):
        now = T0 + timedelta(days=day)
        h = Horizon(now, Q, 96)
        history = _samples(simulated, point, now - timedelta(days=7), now)
        actual = baseline.interval_means(_samples(simulated, point, now, h.end), h)
        fc = baseline.forecast(history, h, now)
        yest = baseline.interval_means(
            _samples(simulated, point, now - timedelta(days=1), now), h.shifted(-timedelta(days=1))
        )
        ours.append(np.mean(np.abs(fc - actual)) / rating)
        persist.append(np.mean(np.abs(history[-1][1] - actual)) / rating)
        yesterday.append(np.mean(np.abs(yest - actual)) / rating)
    nmae = float(np.mean(ours))
    assert nmae < 0.06, f"{point}: nMAE {nmae:.3f}"
    assert nmae < 0.35 * float(np.mean(persist))
    assert nmae < float(np.mean(yesterday))
