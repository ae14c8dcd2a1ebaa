"""One example of each information object, for the profile document, tests and benchmarks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ForecastInterval,
    ReserveActivation,
    ReservedInterval,
    ReserveNotification,
    ReserveVerification,
    VerificationInterval,
)

MICROGRID = "demo-microgrid"
MGMS_SENDER = "urn:mgms:gateway:demo-microgrid"
AMS_SENDER = "https://ams.example.net/smartapi"
T0 = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)


def forecast(intervals: int = 4) -> FlexibilityForecast:
    rows = []
    for i in range(intervals):
        base = 40.0 - 2.5 * (i % 8)
        rows.append(
            ForecastInterval(
                p_kw=base,
                p_min_kw=base - 45.0,
                p_max_kw=base + 50.0,
                q_kvar=5.0,
                q_min_kvar=-25.0,
                q_max_kvar=35.0,
            )
        )
    return FlexibilityForecast(
        id="5b0f6c3e-forecast-0001",
        sender=MGMS_SENDER,
        generated_at=T0 - timedelta(minutes=5),
        microgrid=MICROGRID,
        start=T0,
        intervals=tuple(rows),
    )


def reserve_notification() -> ReserveNotification:
    return ReserveNotification(
        id="9d2a41f0-reserve-0001",
        sender=AMS_SENDER,
        generated_at=T0 - timedelta(minutes=2),
        microgrid=MICROGRID,
        purchase="fmo-clearing-2025-06-02-0042",
        start=T0,
        intervals=(
            ReservedInterval(p_raise_kw=0.0, p_lower_kw=30.0, q_raise_kvar=0.0, q_lower_kvar=0.0),
            ReservedInterval(p_raise_kw=0.0, p_lower_kw=30.0, q_raise_kvar=0.0, q_lower_kvar=0.0),
        ),
    )


def reserve_activation() -> ReserveActivation:
    return ReserveActivation(
        id="c7e19b22-activation-0001",
        sender=AMS_SENDER,
        generated_at=T0 + timedelta(minutes=1),
        microgrid=MICROGRID,
        notification="9d2a41f0-reserve-0001",
        p_kw=10.0,
        q_kvar=5.0,
        start=T0 + timedelta(minutes=1),
        end=T0 + timedelta(minutes=30),
    )


def reserve_verification() -> ReserveVerification:
    return ReserveVerification(
        id="e4b8d7a1-verification-0001",
        sender=MGMS_SENDER,
        generated_at=T0 + timedelta(minutes=31),
        microgrid=MICROGRID,
        activation="c7e19b22-activation-0001",
        start=T0,
        intervals=(
            VerificationInterval(
                p_set_kw=10.0,
                p_baseline_kw=40.0,
                p_measured_kw=11.2,
                p_delivered_kw=-28.8,
                p_percent=96.0,
                q_set_kvar=5.0,
                q_baseline_kvar=5.0,
                q_measured_kvar=5.1,
                q_delivered_kvar=0.1,
                q_percent=100.0,
            ),
            VerificationInterval(
                p_set_kw=10.0,
                p_baseline_kw=37.5,
                p_measured_kw=10.4,
                p_delivered_kw=-27.1,
                p_percent=98.5454,
                q_set_kvar=5.0,
                q_baseline_kvar=5.0,
                q_measured_kvar=4.9,
                q_delivered_kvar=-0.1,
                q_percent=100.0,
            ),
        ),
    )


def all_information_objects() -> list[
    FlexibilityForecast | ReserveNotification | ReserveActivation | ReserveVerification
]:
    return [forecast(), reserve_notification(), reserve_activation(), reserve_verification()]
