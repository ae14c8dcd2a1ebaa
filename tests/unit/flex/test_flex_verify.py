from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.flex.intervals import Horizon
from gateway.flex.verify import Baseline, Measurements, Setpoint, counter_mean, held_mean, verify

T0 = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
S = timedelta(seconds=1)


def test_held_mean_weights_each_sample_until_the_next() -> None:
    samples = [(T0 - 5 * S, 10.0), (T0 + 60 * S, 20.0), (T0 + 120 * S, 40.0)]
    # [0,60) at 10, [60,120) at 20, [120,180) at 40
    assert held_mean(samples, T0, T0 + 180 * S) == pytest.approx((10 + 20 + 40) / 3)
    assert held_mean([(T0 + 30 * S, 5.0)], T0, T0 + 60 * S) == 5.0
    assert held_mean([], T0, T0 + 60 * S) is None


def test_counter_mean_from_interpolated_energy_counters() -> None:
    imports = [(T0 - 10 * S, 100.0), (T0 + Q + 10 * S, 100.0 + 920 / 3600 * 40)]
    exports = [(T0 - 10 * S, 5.0), (T0 + Q + 10 * S, 5.0)]
    assert counter_mean(imports, exports, T0, T0 + Q) == pytest.approx(40.0)
    assert counter_mean(imports[1:], exports, T0, T0 + Q) is None  # not bracketed


def grid(p: tuple[float, ...]) -> Baseline:
    return Baseline(Horizon(T0, Q, len(p)), p, tuple(0.0 for _ in p))


def test_up_activation_met_in_full_and_in_part() -> None:
    # baseline 60 kW import, set 30 kW (30 up); measured 31 in interval 0, 45 in interval 1
    base = grid((60.0, 60.0))
    p = [(T0 + k * 10 * S, 31.0 if k < 90 else 45.0) for k in range(181)]
    v = verify(
        "a1",
        "r1",
        base,
        T0,
        T0 + 2 * Q,
        T0 + 2 * Q,
        [Setpoint(T0, 30.0)],
        Measurements(p=p),
        final=True,
    )
    first, second = v.intervals
    assert first.requested_kw == 30 and first.delivered_kw == pytest.approx(29.0)
    assert first.delivered_pct == pytest.approx(100 * 29 / 30)
    assert first.delivered_kwh == pytest.approx(29 * 0.25)
    assert second.delivered_pct == pytest.approx(50.0)
    assert first.source == "power_samples"
    assert v.delivered_pct == pytest.approx(100 * (29 + 15) / 60)


def test_down_activation_partial_coverage_and_counters() -> None:
    base = grid((-20.0,))
    start = T0 + 5 * 60 * S  # covers the last 10 minutes of the interval
    # 10 kW import from the start; the counter is read 1 s after the interval ends
    imports = [(T0, 0.0), (start, 0.0), (T0 + Q + S, 10 * 601 / 3600)]
    exports = [(T0, 0.0), (start, 0.0), (T0 + Q + S, 0.0)]
    sp = [Setpoint(start, 10.0)]
    v = verify(
        "a1",
        None,
        base,
        start,
        None,
        T0 + Q,
        sp,
        Measurements(e_import=imports, e_export=exports),
        final=False,
    )
    (iv,) = v.intervals
    assert iv.covered_s == 600
    assert iv.source == "energy_counters"
    assert iv.measured_p_kw == pytest.approx(10.0)
    assert iv.requested_kw == 30 and iv.delivered_kw == pytest.approx(30.0)
    # moving the wrong way is negative delivery
    wrong = verify(
        "a1", None, base, start, None, T0 + Q, sp, Measurements(p=[(T0, -25.0)]), final=True
    )
    assert wrong.intervals[0].delivered_kw == pytest.approx(-5.0)


def test_running_intervals_wait_and_tiny_requests_have_no_percent() -> None:
    base = grid((10.0, 10.0))
    p = [(T0, 10.2)]
    running = verify(
        "a",
        None,
        base,
        T0,
        None,
        T0 + Q + 60 * S,
        [Setpoint(T0, 10.1)],
        Measurements(p=p),
        final=False,
    )
    assert len(running.intervals) == 1  # the second interval is not over yet
    assert running.intervals[0].delivered_pct is None  # 0.1 kW asked: no percentage
    final = verify(
        "a",
        None,
        base,
        T0,
        None,
        T0 + Q + 60 * S,
        [Setpoint(T0, 10.1)],
        Measurements(p=p),
        final=True,
    )
    assert [i.covered_s for i in final.intervals] == [900, 60]


def test_set_point_changes_are_time_weighted_and_q_is_verified() -> None:
    base = Baseline(Horizon(T0, Q, 1), (50.0,), (5.0,))
    sps = [Setpoint(T0, 20.0, 15.0), Setpoint(T0 + 300 * S, 35.0, 15.0)]
    meas = Measurements(p=[(T0, 20.0), (T0 + 300 * S, 35.0)], q=[(T0, 14.0)])
    (iv,) = verify("a", None, base, T0, T0 + Q, T0 + Q, sps, meas, final=True).intervals
    assert iv.set_p_kw == pytest.approx((20 * 300 + 35 * 600) / 900)
    assert iv.delivered_pct == pytest.approx(100.0)
    assert iv.set_q_kvar == 15.0 and iv.delivered_q_kvar == pytest.approx(9.0)


def test_held_mean_does_not_hold_a_value_across_a_hole() -> None:
    every_second = [(T0 + k * S, 10.0) for k in range(-2, 4)]
    after_hole = [(T0 + k * S, 30.0) for k in range(9, 12)]
    # 3 s to 9 s unread (the gateway was down): 10 kW held for 6 s would be made up
    assert held_mean(every_second + after_hole, T0, T0 + 10 * S) is None
    assert held_mean(every_second, T0, T0 + 3 * S) == pytest.approx(10.0)
    # a window starting well before the first sample is not measured either
    assert held_mean(after_hole, T0, T0 + 12 * S) is None


def test_an_interval_without_measurement_is_reported_unmeasured_in_the_final() -> None:
    base = grid((60.0, 60.0))
    p = [(T0 + Q + k * 10 * S, 31.0) for k in range(-1, 92)]  # only the second interval
    args = ("a1", "r1", base, T0, T0 + 2 * Q, T0 + 2 * Q, [Setpoint(T0, 30.0)])
    partial = verify(*args, Measurements(p=p), final=False)
    assert [iv.start for iv in partial.intervals] == [T0 + Q]
    first, second = verify(*args, Measurements(p=p), final=True).intervals
    assert first.source == "unmeasured" and first.delivered_pct == 0.0
    assert first.requested_kw == 30.0 and first.delivered_kw == 0.0
    assert second.source == "power_samples" and second.delivered_pct == pytest.approx(29 / 0.3)


def test_the_first_set_point_counts_from_the_activation_start() -> None:
    """Resumed after a restart that lasted a whole interval: that interval was asked too."""
    base = grid((60.0, 60.0))
    p = [(T0 + k * 10 * S, 60.0 if k < 90 else 31.0) for k in range(-1, 182)]
    v = verify(
        "a1",
        "r1",
        base,
        T0,
        T0 + 2 * Q,
        T0 + 2 * Q,
        [Setpoint(T0 + Q, 30.0)],
        Measurements(p=p),
        final=True,
    )
    first, second = v.intervals
    assert first.set_p_kw == 30.0 and first.requested_kw == 30.0
    assert first.delivered_pct == pytest.approx(0.0)
    assert second.delivered_pct == pytest.approx(29 / 0.3)


def test_counters_are_not_interpolated_inside_a_hole() -> None:
    """The gateway was down from 5 s before to 60 s after the start: how the energy of the
    hole splits around the start is unknown; a hole inside the window is no matter."""
    steady = [(T0 + k * S, 0.01 * k) for k in range(-20, -4)]
    resumed = [(T0 + k * S, 0.01 * k) for k in range(60, 920)]
    exports = [(T0 + k * S, 0.0) for k in range(-20, 920)]
    assert counter_mean(steady + resumed, exports, T0, T0 + Q) is None
    inside = [(T0 + k * S, 0.01 * k) for k in range(-20, 920) if not 100 <= k < 200]
    assert counter_mean(inside, exports, T0, T0 + Q) == pytest.approx(36.0)
