"""Between the flexibility functions' own objects (gateway.flex.model) and the Smart API
message model (gateway.smartapi.flexibility).

Directions: the Smart API model names its bands by what they do to the coupling-point P
and Q (`p_raise_kw`: more import, `p_lower_kw`: less). The flexibility functions count P
the way balancing does (`p_up_kw` = more injection inside the microgrid = less import)
and Q from the coupling point. So flex P up is coupling-point P lower, here and nowhere
else; Q up is Q raise.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from gateway.flex.intervals import Horizon
from gateway.flex.model import (
    Activation,
    Band,
    FlexForecast,
    FlexInterval,
    Reservation,
    Verification,
    VerifiedInterval,
)
from gateway.flex.verify import MIN_REQUEST, UNMEASURED
from gateway.smartapi import flexibility as sa
from gateway.smartapi.messages import SeriesRole, TimeSeries
from gateway.smartapi.vocab import QuantityKind
from gateway.units import convert, units_of


def reservation_of(notification: sa.ReserveNotification) -> Reservation:
    """A Reserve Notification as the reservation it asks the microgrid to hold; its id is
    the notification's message id (what activations refer to)."""
    bands = tuple(
        Band(
            start=notification.interval_start(i),
            end=notification.interval_start(i + 1),
            p_up_kw=band.p_lower_kw,  # less import = more injection
            p_down_kw=band.p_raise_kw,
            q_up_kvar=band.q_raise_kvar,
            q_down_kvar=band.q_lower_kvar,
        )
        for i, band in enumerate(notification.intervals)
    )
    return Reservation(notification.id, bands, service=f"CRP {notification.purchase}")


def notification_of(
    reservation: Reservation, template: sa.ReserveNotification
) -> sa.ReserveNotification:
    """The accepted part of a reservation in the shape of the notification it came from."""
    step = template.step
    intervals = tuple(
        sa.ReservedInterval(
            p_raise_kw=band.p_down_kw,
            p_lower_kw=band.p_up_kw,
            q_raise_kvar=band.q_up_kvar,
            q_lower_kvar=band.q_down_kvar,
        )
        for band in reservation.bands
    )
    return sa.ReserveNotification(
        id=template.id,
        sender=template.sender,
        generated_at=template.generated_at,
        microgrid=template.microgrid,
        start=reservation.start,
        step=step,
        purchase=template.purchase,
        intervals=intervals,
    )


def activation_of(activation: sa.ReserveActivation, reservation: Reservation | None) -> Activation:
    """A Reserve Activation as a set point; its Q set point counts only where the
    reservation bought a reactive band (the message always carries one)."""
    q_bought = reservation is not None and any(
        b.q_up_kvar > 0 or b.q_down_kvar > 0 for b in reservation.bands
    )
    return Activation(
        id=activation.id,
        start=activation.start,
        end=activation.end,
        p_kw=activation.p_kw,
        q_kvar=activation.q_kvar if q_bought else None,
        reservation_id=activation.notification,
    )


def forecast_message(
    forecast: FlexForecast, sender: str, message_id: str | None = None
) -> sa.FlexibilityForecast:
    ivs = forecast.intervals
    step = ivs[1].start - ivs[0].start if len(ivs) > 1 else ivs[0].end - ivs[0].start
    return sa.FlexibilityForecast(
        id=message_id or str(uuid.uuid4()),
        sender=sender,
        generated_at=forecast.generated_at,
        microgrid=forecast.microgrid,
        start=ivs[0].start,
        step=step,
        intervals=tuple(_forecast_interval(i) for i in ivs),
    )


def _forecast_interval(i: FlexInterval) -> sa.ForecastInterval:
    # the message checks min <= base <= max exactly: keep float noise from breaking it
    return sa.ForecastInterval(
        p_kw=i.baseline_p_kw,
        p_min_kw=min(i.p_min_kw, i.baseline_p_kw),
        p_max_kw=max(i.p_max_kw, i.baseline_p_kw),
        q_kvar=i.baseline_q_kvar,
        q_min_kvar=min(i.q_min_kvar, i.baseline_q_kvar),
        q_max_kvar=max(i.q_max_kvar, i.baseline_q_kvar),
    )


def verification_message(
    verification: Verification,
    sender: str,
    microgrid: str,
    generated_at: datetime,
) -> sa.ReserveVerification | None:
    """The verified intervals as one contiguous profile (None when none is verified yet).
    The id is derived from the activation and the last interval (or `final`), so sending
    the same verification again, even after a restart, is the same message. An interval
    without measurements is reported as nothing delivered."""
    ivs = sorted(verification.intervals, key=lambda i: i.start)
    if not ivs:
        return None
    step = ivs[0].end - ivs[0].start
    by_start = {i.start: i for i in ivs}
    rows = []
    t = ivs[0].start
    while t <= ivs[-1].start:
        got = by_start.get(t)
        rows.append(_verified(got) if got is not None else _missing())
        t += step
    kind = "final" if verification.final else f"v{int(ivs[-1].start.timestamp())}"
    return sa.ReserveVerification(
        id=_token(f"{verification.activation_id}.{kind}"),
        sender=sender,
        generated_at=generated_at,
        microgrid=microgrid,
        activation=verification.activation_id,
        start=ivs[0].start,
        step=step,
        intervals=tuple(rows),
    )


def _token(text: str) -> str:
    return text if len(text) <= 128 else str(uuid.uuid5(uuid.NAMESPACE_URL, text))


def _verified(i: VerifiedInterval) -> sa.VerificationInterval:
    if i.source == UNMEASURED:
        return _missing()
    # the message counts delivered from the coupling point: measured - baseline
    pct = i.delivered_pct
    if pct is None:  # nothing asked: held at the baseline is full delivery
        pct = 100.0 if abs(i.measured_p_kw - i.baseline_p_kw) < MIN_REQUEST else 0.0
    q = {}
    if i.set_q_kvar is not None and i.baseline_q_kvar is not None and i.measured_q_kvar is not None:
        asked = i.set_q_kvar - i.baseline_q_kvar
        moved = i.measured_q_kvar - i.baseline_q_kvar
        q = {
            "q_set_kvar": i.set_q_kvar,
            "q_baseline_kvar": i.baseline_q_kvar,
            "q_measured_kvar": i.measured_q_kvar,
            "q_delivered_kvar": moved,
            "q_percent": 100.0 * moved / asked if abs(asked) >= MIN_REQUEST else 100.0,
        }
    return sa.VerificationInterval(
        p_set_kw=i.set_p_kw,
        p_baseline_kw=i.baseline_p_kw,
        p_measured_kw=i.measured_p_kw,
        p_delivered_kw=i.measured_p_kw - i.baseline_p_kw,
        p_percent=pct,
        **q,
    )


def _missing() -> sa.VerificationInterval:
    """An interval the store holds no coupling-point data for: nothing can be shown."""
    return sa.VerificationInterval(
        p_set_kw=0.0, p_baseline_kw=0.0, p_measured_kw=0.0, p_delivered_kw=0.0, p_percent=0.0
    )


class ExternalForecasts:
    """The latest external forecast per DER (a Smart API active-power time series, e.g. a PV
    forecast from a forecast service), as the service's `external` source: each call maps
    them onto the horizon asked for. An interval takes the time mean of the values that
    overlap it; intervals the series does not cover are None (the history decides)."""

    def __init__(self) -> None:
        self._series: dict[str, TimeSeries] = {}

    def check(self, der: str, series: TimeSeries) -> None:
        """ValueError naming what is wrong when `series` cannot be a forecast of `der`."""
        power = units_of("active_power")
        if series.quantity is not QuantityKind.ACTIVE_POWER or series.unit not in power:
            raise ValueError(
                f"DER {der!r}: an external forecast must be active power in W, kW or MW, "
                f"not {series.quantity} in {series.unit}"
            )
        if series.role not in (None, SeriesRole.BASELINE):
            raise ValueError(
                f"DER {der!r}: an external forecast is a baseline, not a {series.role} series"
            )

    def update(self, der: str, series: TimeSeries) -> None:
        self.check(der, series)
        self._series[der] = series

    def __call__(self, horizon: Horizon) -> dict[str, list[float | None]]:
        return {der: on_horizon(s, horizon) for der, s in self._series.items()}


def on_horizon(series: TimeSeries, horizon: Horizon) -> list[float | None]:
    factor = convert(1.0, series.unit, "KiloW")
    out: list[float | None] = []
    for i in range(horizon.count):
        a, b = horizon.start_of(i), horizon.end_of(i)
        total = weight = 0.0
        for k, value in enumerate(series.values):
            s0 = series.start + k * series.step
            s1 = s0 + series.step
            overlap = (min(b, s1) - max(a, s0)).total_seconds()
            if overlap > 0:
                total += value * overlap
                weight += overlap
        full = weight >= 0.5 * (b - a).total_seconds()
        out.append(factor * total / weight if full else None)
    return out
