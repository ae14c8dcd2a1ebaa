"""Model objects refuse what the codec could not emit."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.smartapi import examples
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ForecastInterval,
    ReserveActivation,
    ReservedInterval,
    VerificationInterval,
)
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    TimeSeries,
    ValueObject,
)
from gateway.smartapi.vocab import QuantityKind

T0 = examples.T0


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW-HR"), "does not fit"),
        (lambda: ValueObject(unit="Furlong"), "unknown unit"),
        (lambda: ValueObject(value=1.0), "needs a unit"),
        (lambda: ValueObject(unit="KiloW", value=float("nan")), "not finite"),
        (lambda: ValueObject(time=datetime(2025, 1, 1)), "no timezone"),
        (
            lambda: TimeSeries(
                quantity=QuantityKind.ACTIVE_POWER,
                unit="KiloW",
                start=T0,
                step=timedelta(0),
                values=(1.0,),
            ),
            "not positive",
        ),
        (
            lambda: TimeSeries(
                quantity=QuantityKind.ACTIVE_POWER,
                unit="KiloW",
                start=T0,
                step=timedelta(minutes=15),
                values=(),
            ),
            "at least one",
        ),
        (
            lambda: TimeSeries(
                quantity=QuantityKind.ACTIVE_POWER,
                unit="KiloW",
                start=T0,
                step=timedelta(minutes=15),
                values=(1.0, 10**400, float("nan")),
            ),
            "value 2 is not finite",
        ),
        (lambda: ForecastInterval(0.0, 0.0, 0.0, 0.0, -float("inf"), 0.0), "q_min_kvar is not"),
        (lambda: Entity(iri="not an iri"), "absolute IRI"),
        (lambda: Activity(method=Method.READ, entities=()), "at least one entity"),
        (
            lambda: Request(id="has space", sender="urn:a", generated_at=T0, activities=()),
            "not a token",
        ),
        (
            lambda: ErrorMessage(id="e", sender="urn:a", generated_at=T0, code=42, message="x"),
            "out of range",
        ),
        (lambda: ForecastInterval(10.0, 11.0, 20.0, 0.0, 0.0, 0.0), "P range"),
        (lambda: ReservedInterval(-1.0, 0.0), "negative"),
        (lambda: VerificationInterval(1.0, 1.0, 1.0, 1.0, float("inf")), "not finite"),
        (
            lambda: ReserveActivation(
                id="a",
                sender="urn:a",
                generated_at=T0,
                microgrid="mg",
                notification="n",
                p_kw=1.0,
                q_kvar=0.0,
                start=T0,
                end=T0,
            ),
            "ends",
        ),
        (
            lambda: FlexibilityForecast(
                id="f", sender="urn:a", generated_at=T0, microgrid="mg", start=T0, intervals=()
            ),
            "at least one interval",
        ),
    ],
)
def test_invalid_objects_are_refused(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_times_are_held_in_utc() -> None:
    from datetime import timezone

    local = datetime(2025, 6, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    msg = examples.reserve_activation()
    again = ReserveActivation(
        id=msg.id,
        sender=msg.sender,
        generated_at=local,
        microgrid=msg.microgrid,
        notification=msg.notification,
        p_kw=1.0,
        q_kvar=0.0,
        start=local,
    )
    assert again.generated_at.utcoffset() == timedelta(0) and again.start.hour == 10


def test_forecast_interval_derived_bands() -> None:
    i = ForecastInterval(10.0, 4.0, 25.0, 1.0, -2.0, 3.0)
    assert (i.p_raise_kw, i.p_lower_kw, i.q_raise_kvar, i.q_lower_kvar) == (15.0, 6.0, 2.0, 3.0)


def test_repeated_properties_have_one_order() -> None:
    a = ValueObject(point="a.p", unit="KiloW", value=1.0)
    b = ValueObject(point="b.p", unit="KiloW", value=2.0)
    assert Entity(iri="urn:x", value_objects=(a, b)) == Entity(iri="urn:x", value_objects=(b, a))
