"""FlexWatch: the activation and notification the status page shows, and the flex metrics,
as the flexibility service reports its decisions, cycles, verifications and ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from gateway.flex.model import (
    Activation,
    ActivationDecision,
    Band,
    DecisionStatus,
    Reason,
    ReasonCode,
    Reservation,
    Verification,
    VerifiedInterval,
)
from gateway.flex.service import FlexService
from gateway.ops.flexwatch import FlexWatch
from gateway.ops.metrics import Registry

NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _now() -> None:
    """The status is judged against the wall clock: each test's NOW is taken when it starts
    (a module-level time went stale when the whole suite ran longer than a band)."""
    global NOW
    NOW = datetime.now(UTC)


@dataclass
class Running:
    activation: Activation


@dataclass
class Service:
    """What FlexWatch reads of the service: the reservations held and the activation in force."""

    reservations: list[Reservation] = field(default_factory=list)
    running: Running | None = None


def watch() -> tuple[FlexWatch, Service, Registry]:
    service, metrics = Service(), Registry()
    return FlexWatch(cast(FlexService, cast(Any, service)), metrics), service, metrics


def activation(name: str, start: datetime | None = None) -> Activation:
    start = NOW if start is None else start
    return Activation(name, start, start + timedelta(minutes=15), p_kw=10.0)


def test_nothing_yet() -> None:
    w, _, metrics = watch()
    assert w.status().activation is None and w.status().notification is None
    counter = metrics.counter("mgms_activations_total", "", ("result",))
    assert counter.value(result="applied") == 0


def test_an_activation_from_decision_to_end() -> None:
    w, service, metrics = watch()
    act = activation("ra-1")
    decision = ActivationDecision(
        "ra-1",
        DecisionStatus.CURTAILED,
        12.0,
        None,
        (Reason(ReasonCode.COUPLING_POINT, "pcc", "export limit 150 kW"),),
    )
    w.decided(act, decision)
    service.running = Running(act)
    w.in_force(act, 0.3)
    for i in range(3):
        w.cycled(act, NOW + timedelta(seconds=i), 12.0, 40.0, 40.0 - 10 * i)
    view = w.status().activation
    assert view is not None
    assert (view.id, view.state, view.p_kw) == ("ra-1", "active (curtailed)", 12.0)
    assert "export limit 150 kW" in view.detail
    assert [p.measured_kw for p in view.series] == [40.0, 30.0, 20.0]
    service.running = None
    assert w.status().activation.state == "ending"  # type: ignore[union-attr]
    w.ended(act, NOW + timedelta(minutes=15), "ended at 12:15:00 UTC")
    view = w.status().activation
    assert view is not None and view.state == "finished" and "ended at 12:15" in view.detail
    counter = metrics.counter("mgms_activations_total", "", ("result",))
    assert counter.value(result="curtailed") == 1 and counter.value(result="applied") == 0
    latency = metrics.histogram(
        "mgms_activation_latency_seconds", "", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
    )
    assert latency.count() == 1


def test_a_refusal_while_one_is_in_force_keeps_that_one_on_the_page() -> None:
    w, service, metrics = watch()
    first = activation("ra-1")
    w.decided(first, ActivationDecision("ra-1", DecisionStatus.ACCEPTED, 10.0, None))
    service.running = Running(first)
    w.cycled(first, NOW, 10.0, 20.0, 15.0)
    w.decided(activation("ra-2"), ActivationDecision("ra-2", DecisionStatus.REFUSED, None, None))
    view = w.status().activation
    assert view is not None and view.id == "ra-1" and len(view.series) == 1
    counter = metrics.counter("mgms_activations_total", "", ("result",))
    assert counter.value(result="rejected") == 1 and counter.value(result="applied") == 1
    # with nothing in force, a refusal is what the page shows
    service.running = None
    w.decided(activation("ra-3"), ActivationDecision("ra-3", DecisionStatus.REFUSED, None, None))
    assert w.status().activation.state == "rejected"  # type: ignore[union-attr]


def test_a_later_activation_is_scheduled_and_cycles_of_others_are_ignored() -> None:
    w, service, _ = watch()
    later = activation("ra-1", NOW + timedelta(minutes=5))
    w.decided(later, ActivationDecision("ra-1", DecisionStatus.ACCEPTED, 10.0, None))
    service.running = Running(later)
    w.cycled(activation("other"), NOW, 1.0, 1.0, 1.0)
    view = w.status().activation
    assert view is not None and view.state == "scheduled" and view.series == ()


def test_delivered_percent_is_the_last_verified_interval() -> None:
    w, _, metrics = watch()

    def interval(minute: int, pct: float | None) -> VerifiedInterval:
        start = NOW + timedelta(minutes=minute)
        return VerifiedInterval(
            start, start + timedelta(minutes=1), 60, 10, 40, 11, -30, -29, pct, 0.5, "power_samples"
        )

    w.verified(Verification("ra-1", None, (interval(0, 96.0), interval(1, 88.5)), False))
    gauge = metrics.gauge("mgms_verification_delivered_percent", "")
    assert gauge.value() == 88.5
    w.verified(Verification("ra-1", None, (interval(2, None),), False))  # nothing requested
    assert gauge.value() == 88.5


def test_the_notification_in_force_else_the_next() -> None:
    w, service, _ = watch()
    soon = Reservation("rn-next", (Band(NOW + timedelta(hours=1), NOW + timedelta(hours=2)),))
    service.reservations = [soon]
    view = w.status().notification
    assert view is not None and view.id == "rn-next" and "not yet in force" in view.detail
    current = Reservation(
        "rn-now", (Band(NOW - timedelta(minutes=5), NOW + timedelta(minutes=10), p_up_kw=30),)
    )
    past = Reservation("rn-old", (Band(NOW - timedelta(hours=2), NOW - timedelta(hours=1)),))
    service.reservations = [soon, current, past]
    view = w.status().notification
    assert view is not None and view.id == "rn-now" and "P up 30 kW" in view.detail
