"""The flexibility objects in and out of the Smart API message model, through the real
codec (Turtle, shapes) so the messages are ones the AMS can read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.flex.messages import (
    activation_of,
    forecast_message,
    notification_of,
    reservation_of,
    verification_message,
)
from gateway.flex.model import (
    FlexForecast,
    FlexInterval,
    Verification,
    VerifiedInterval,
)
from gateway.smartapi import codec
from gateway.smartapi import flexibility as sa

T0 = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
SENDER = "https://mgms.example.org/demo"


def notification(q: float = 0.0) -> sa.ReserveNotification:
    return sa.ReserveNotification(
        id="n-1",
        sender="https://ams.example.org/",
        generated_at=T0 - timedelta(hours=1),
        microgrid="demo-microgrid",
        start=T0,
        step=Q,
        purchase="bid-7",
        intervals=(
            sa.ReservedInterval(p_raise_kw=5.0, p_lower_kw=30.0, q_raise_kvar=q),
            sa.ReservedInterval(p_raise_kw=0.0, p_lower_kw=20.0),
        ),
    )


def test_notification_directions_swap_for_p_only() -> None:
    res = reservation_of(notification(q=7.0))
    assert res.id == "n-1" and res.service == "CRP bid-7"
    first, second = res.bands
    # the message's P down (less import) is the microgrid's up flexibility
    assert (first.p_up_kw, first.p_down_kw, first.q_up_kvar) == (30.0, 5.0, 7.0)
    assert (first.start, first.end, second.start) == (T0, T0 + Q, T0 + Q)
    back = notification_of(res, notification(q=7.0))
    assert back.intervals == notification(q=7.0).intervals


def test_activation_q_counts_only_with_a_reactive_band() -> None:
    act = sa.ReserveActivation(
        id="a-1",
        sender="https://ams.example.org/",
        generated_at=T0,
        microgrid="demo-microgrid",
        notification="n-1",
        p_kw=12.0,
        q_kvar=3.0,
        start=T0,
    )
    plain = activation_of(act, reservation_of(notification()))
    assert (plain.p_kw, plain.q_kvar, plain.reservation_id) == (12.0, None, "n-1")
    assert activation_of(act, reservation_of(notification(q=7.0))).q_kvar == 3.0


def test_forecast_message_round_trips_through_the_codec() -> None:
    ivs = tuple(
        FlexInterval(T0 + k * Q, T0 + (k + 1) * Q, 40.0 + k, 1.0, 10.0 + k, 70.0, -50.0, 52.0)
        for k in range(4)
    )
    msg = forecast_message(FlexForecast("demo-microgrid", T0, ivs), SENDER, "f-1")
    decoded = codec.decode(codec.encode(msg), "text/turtle")
    assert decoded == msg
    assert msg.step == Q and msg.intervals[2].p_kw == 42.0
    # coupling-point up (more import) is the microgrid's down flexibility
    assert msg.intervals[0].p_raise_kw == pytest.approx(ivs[0].p_down_kw)


def verified(k: int, measured: float, pct: float | None) -> VerifiedInterval:
    return VerifiedInterval(
        T0 + k * Q,
        T0 + (k + 1) * Q,
        900,
        10.0,
        40.0,
        measured,
        30.0,
        40.0 - measured,
        pct,
        (40.0 - measured) * 0.25,
        "energy_counters",
    )


def test_verification_message_counts_from_the_coupling_point_and_fills_gaps() -> None:
    v = Verification("a-1", "n-1", (verified(0, 11.0, 96.7), verified(2, 40.2, None)), True)
    msg = verification_message(v, SENDER, "demo-microgrid", T0 + 2 * Q)
    assert msg is not None and msg.id == "a-1.final" and msg.activation == "a-1"
    first, gap, third = msg.intervals
    assert first.p_delivered_kw == pytest.approx(-29.0)  # measured - baseline
    assert first.p_percent == pytest.approx(96.7)
    assert gap.p_percent == 0.0 and gap.p_measured_kw == 0.0
    assert third.p_percent == 100.0  # nothing asked, nothing moved
    assert codec.decode(codec.encode(msg), "text/turtle") == msg
    interim = verification_message(
        Verification("a-1", "n-1", (verified(0, 11.0, 96.7),), False), SENDER, "demo-microgrid", T0
    )
    assert interim is not None and interim.id == f"a-1.v{int(T0.timestamp())}"
    assert verification_message(Verification("a-1", None, (), False), SENDER, "m", T0) is None


def test_external_forecast_series_onto_the_horizon() -> None:
    from gateway.flex.intervals import Horizon
    from gateway.flex.messages import ExternalForecasts
    from gateway.smartapi.messages import TimeSeries
    from gateway.smartapi.vocab import QuantityKind

    # hourly values in W from 17:00; the horizon has quarter hours from 16:45
    series = TimeSeries(
        quantity=QuantityKind.ACTIVE_POWER,
        unit="W",
        start=T0,
        step=timedelta(hours=1),
        values=(20000.0, 8000.0),
    )
    forecasts = ExternalForecasts()
    forecasts.update("pv1", series)
    got = forecasts(Horizon(T0 - Q, Q, 10))["pv1"]
    assert got[0] is None  # before the series
    assert got[1:5] == [pytest.approx(20.0)] * 4 and got[5:9] == [pytest.approx(8.0)] * 4
    assert got[9] is None
    with pytest.raises(ValueError, match="must be active power"):
        forecasts.update(
            "pv1",
            TimeSeries(
                quantity=QuantityKind.ENERGY, unit="KiloW-HR", start=T0, step=Q, values=(1.0,)
            ),
        )
    from dataclasses import replace

    from gateway.smartapi.messages import SeriesRole

    with pytest.raises(ValueError, match="a baseline, not a Maximum series"):
        forecasts.update("pv1", replace(series, role=SeriesRole.MAXIMUM))
    assert forecasts(Horizon(T0, Q, 1))["pv1"] == [pytest.approx(20.0)]  # unchanged


def test_an_unmeasured_interval_claims_nothing() -> None:
    from dataclasses import replace

    gone = replace(verified(1, 40.0, 0.0), measured_p_kw=0.0, source="unmeasured")
    v = Verification("a-1", "n-1", (verified(0, 11.0, 96.7), gone), True)
    msg = verification_message(v, SENDER, "demo-microgrid", T0 + 2 * Q)
    assert msg is not None
    _, second = msg.intervals
    assert second.p_percent == 0.0 and second.p_measured_kw == 0.0
    assert second.p_delivered_kw == 0.0
