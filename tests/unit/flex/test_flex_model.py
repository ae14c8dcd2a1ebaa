from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.flex.model import (
    Activation,
    Band,
    FlexInterval,
    Reservation,
    Verification,
    VerifiedInterval,
)

T0 = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def band(i: int, up: float = 10.0) -> Band:
    return Band(T0 + i * Q, T0 + (i + 1) * Q, p_up_kw=up)


def test_reservation_lookup() -> None:
    r = Reservation("r", (band(0), band(1, 20.0)))
    assert r.start == T0 and r.end == T0 + 2 * Q
    found = r.band_at(T0 + Q + timedelta(minutes=1))
    assert found is not None and found.p_up_kw == 20.0
    assert r.band_at(T0 + 2 * Q) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Band(T0, T0, p_up_kw=1), "end is not after start"),
        (lambda: Band(T0, T0 + Q, p_up_kw=-1), "p_up_kw is negative"),
        (lambda: Band(T0, T0 + Q, q_up_kvar=float("inf")), "not a finite number"),
        (lambda: Band(datetime(2024, 1, 1), datetime(2024, 1, 2)), "timezone-aware"),
        (lambda: Reservation("r", ()), "no bands"),
        (lambda: Reservation("", (band(0),)), "without id"),
        (lambda: Reservation("r", (band(1), band(0))), "overlaps or is out of order"),
        (lambda: Activation("a", T0), "neither P nor Q"),
        (lambda: Activation("a", T0, T0, p_kw=1), "end is not after start"),
        (lambda: Activation("a", T0, p_kw=float("nan")), "not a finite number"),
    ],
)
def test_invalid_messages_are_refused_naming_the_field(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_forecast_interval_up_down_and_consistency() -> None:
    iv = FlexInterval(T0, T0 + Q, 30.0, 1.0, 10.0, 45.0, -20.0, 25.0)
    assert (iv.p_up_kw, iv.p_down_kw, iv.q_up_kvar, iv.q_down_kvar) == (20.0, 15.0, 24.0, 21.0)
    with pytest.raises(ValueError, match="baseline P outside"):
        FlexInterval(T0, T0 + Q, 50.0, 0.0, 10.0, 45.0, 0.0, 0.0)


def test_verification_percent_is_energy_weighted() -> None:
    def iv(req: float, got: float, s: float) -> VerifiedInterval:
        return VerifiedInterval(T0, T0 + Q, s, 0, 0, 0, req, got, None, 0, "power_samples")

    v = Verification("a", "r", (iv(10, 10, 900), iv(10, 0, 300)), final=True)
    assert v.delivered_pct == pytest.approx(75.0)
    assert Verification("a", None, (), final=False).delivered_pct is None
