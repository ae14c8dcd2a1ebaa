"""What the flexibility service and its parts talk to, each as the few capabilities it
uses: the latest values (`PointValues`), the records (one Protocol per part of the CRP
flow, `Records` all of them), its clock, where its messages for the AMS go, and who
watches it. The composition root supplies them (gateway.market): the point table,
gateway.flex.records.FlexRecords, the northbound publisher, the metrics.

The parts (reservation, activation, verification, recovery) import these, never the
concrete modules (tests/unit/test_architecture.py holds them to it).

A records call is queued on the records' database thread when it is made, and its
awaitable gives the result: calls made one after the other run in that order, so a write
need not be awaited before the next call is made (the control path awaits the write ahead
of a device command, and the ones queued before it are done by then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.flex.model import (
    Activation,
    ActivationDecision,
    ActivationRecord,
    FlexForecast,
    Reason,
    Reservation,
    Verification,
    VerifiedInterval,
)
from gateway.mapping import Device, Point, Quantity


class Mapped(Protocol):
    """A point that holds a quantity of a DER, and its device."""

    @property
    def point(self) -> Point: ...
    @property
    def device(self) -> Device: ...


class PointValues(Protocol):
    """The latest values by DER and quantity, in the quantity's canonical unit
    (gateway.points.PointTable)."""

    def value(self, der: str, quantity: Quantity) -> float | None: ...

    def find(self, der: str, quantity: Quantity) -> Sequence[Mapped]: ...

    def mapped(self, point_id: str) -> Mapped | None: ...


class ReservationRecords(Protocol):
    """The reservation book's records: decisions on Reserve Notifications."""

    def reservation_status(
        self, reservation_id: str
    ) -> Awaitable[tuple[str, Reservation | None, tuple[Reason, ...]] | None]: ...

    def save_reservation(
        self,
        at: datetime,
        requested: Reservation,
        status: str,
        accepted: Reservation | None,
        reasons: tuple[Reason, ...],
    ) -> Awaitable[None]: ...


class ActivationRecords(Protocol):
    """Activation and control's records: decisions on Reserve Activations, the coupling
    point set points and every DER write (intended before it is sent, then settled)."""

    def activation(self, activation_id: str) -> Awaitable[ActivationRecord | None]: ...

    def save_activation(
        self,
        at: datetime,
        act: Activation,
        status: str,
        p_kw: float | None,
        q_kvar: float | None,
        reasons: tuple[Reason, ...],
        baseline: dict[str, Any] | None,
        state: str,
    ) -> Awaitable[None]: ...

    def pcc_setpoint(
        self, activation_id: str, start: datetime, p_kw: float | None, q_kvar: float | None
    ) -> Awaitable[None]: ...

    def intend_setpoints(
        self, activation_id: str, at: datetime, rows: list[tuple[str, str, float, float]]
    ) -> Awaitable[list[int]]: ...

    def settle_setpoints(self, rows: list[tuple[int, str, str]]) -> Awaitable[None]: ...


class VerificationRecords(Protocol):
    """The verifier's records: verifications and the close of an ended activation."""

    def save_verification(self, v: Verification) -> Awaitable[None]: ...

    def final_verification(self, activation_id: str) -> Awaitable[list[VerifiedInterval]]: ...

    def end_activation(
        self, activation_id: str, at: datetime, state: str, note: str = ""
    ) -> Awaitable[None]: ...


class RecoveryRecords(Protocol):
    """What recovery reads back after a restart, and the writes a kill cut that it settles."""

    def accepted_reservations(self, since: datetime) -> Awaitable[list[Reservation]]: ...

    def open_activations(self) -> Awaitable[list[ActivationRecord]]: ...

    def pcc_setpoints(
        self, activation_id: str
    ) -> Awaitable[list[tuple[datetime, float | None, float | None]]]: ...

    def sent_setpoints(
        self, activation_id: str
    ) -> Awaitable[list[tuple[datetime, str, str, float, str]]]: ...

    def verification(self, activation_id: str) -> Awaitable[list[VerifiedInterval]]: ...

    def unsettled_setpoints(self) -> Awaitable[list[tuple[int, str, str, str, float]]]: ...

    def settle_setpoints(self, rows: list[tuple[int, str, str]]) -> Awaitable[None]: ...


class Records(
    ReservationRecords, ActivationRecords, VerificationRecords, RecoveryRecords, Protocol
):
    """All the records the service hands its parts (gateway.flex.records.FlexRecords)."""


class Clock(Protocol):
    """Time of the service; simulated time in tests and the demo."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FlexPublisher(Protocol):
    """Where messages for the AMS go (the northbound outbox)."""

    async def forecast(self, message: FlexForecast) -> None: ...

    async def verification(self, message: Verification) -> None: ...


class FlexObserver(Protocol):
    """Who watches the service (metrics, the status page): told as things happen, on the
    event loop thread; must be quick and must not fail."""

    def decided(self, act: Activation, decision: ActivationDecision) -> None: ...

    def in_force(self, act: Activation, seconds: float) -> None:
        """The first set points of `act` were written, `seconds` after it was due."""

    def cycled(
        self,
        act: Activation,
        at: datetime,
        setpoint_kw: float | None,
        baseline_kw: float | None,
        measured_kw: float | None,
    ) -> None: ...

    def verified(self, verification: Verification) -> None: ...

    def ended(self, act: Activation, at: datetime, summary: str) -> None: ...


class Unobserved:
    """The default FlexObserver: nobody watches."""

    def decided(self, act: Activation, decision: ActivationDecision) -> None:
        pass

    def in_force(self, act: Activation, seconds: float) -> None:
        pass

    def cycled(
        self,
        act: Activation,
        at: datetime,
        setpoint_kw: float | None,
        baseline_kw: float | None,
        measured_kw: float | None,
    ) -> None:
        pass

    def verified(self, verification: Verification) -> None:
        pass

    def ended(self, act: Activation, at: datetime, summary: str) -> None:
        pass
