"""Reservation, the first step of the CRP flow in the gateway: a Reserve Notification is
checked against what is already held (gateway.flex.conflict), decided, recorded, and what
fits is held. The book owns the accepted reservations and the plan (LP) that keeps their
bands; the activation and control part reads both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from gateway.flex.conflict import NotificationCheck, check_notification
from gateway.flex.model import (
    DecisionStatus,
    NotificationDecision,
    Reason,
    ReasonCode,
    Reservation,
)
from gateway.flex.ports import ReservationRecords
from gateway.flex.schedule import PlanInput, PlanResult

log = logging.getLogger(__name__)

#: builds the plan's input for a set of held reservations
PlanInputFor = Callable[[Sequence[Reservation]], Awaitable[PlanInput]]


class ReservationBook:
    def __init__(self, records: ReservationRecords) -> None:
        self.records = records
        self.reservations: list[Reservation] = []
        self.plan: PlanResult | None = None
        #: when the plan was made (None: make one at the next cycle)
        self.plan_at: datetime | None = None

    def held(self, reservation_id: str) -> Reservation | None:
        """An accepted reservation still held."""
        return next((r for r in self.reservations if r.id == reservation_id), None)

    def drop_ended(self, now: datetime) -> None:
        self.reservations = [r for r in self.reservations if r.end > now]

    def planned(self, plan: PlanResult | None, at: datetime | None) -> None:
        self.plan, self.plan_at = plan, at

    def plan_due(self, now: datetime, step: timedelta) -> bool:
        return self.plan is None or self.plan_at is None or now - self.plan_at >= step

    def keep_bands(
        self, now: datetime, reservation: Reservation | None
    ) -> list[tuple[str, str, float, float]]:
        """Up/down bands the other reservations hold now (kept as headroom in a dispatch)."""
        out = []
        for r in self.reservations:
            if reservation is not None and r.id == reservation.id:
                continue
            band = r.band_at(now)
            if band is not None and (band.p_up_kw > 0 or band.p_down_kw > 0):
                out.append((r.id, r.service, band.p_up_kw, band.p_down_kw))
        return out

    async def decide(
        self, reservation: Reservation, now: datetime, partial: bool, plan_input: PlanInputFor
    ) -> tuple[NotificationDecision, bool]:
        """The decision on a Reserve Notification, recorded, and whether it is new (a
        repeated delivery gets the recorded answer and changes nothing). With `partial`
        off, a reservation that does not fit whole is refused (nothing held) and the
        reasons say how much would fit."""
        known = await self.records.reservation_status(reservation.id)
        if known is not None:
            status, accepted, reasons = known
            return NotificationDecision(
                reservation.id, DecisionStatus(status), accepted, reasons
            ), False
        others = [r for r in self.reservations if r.end > now]
        inp = await plan_input(others)
        check: NotificationCheck = await asyncio.to_thread(
            check_notification, inp, reservation, now
        )
        decision = check.decision
        if not partial and decision.status is DecisionStatus.CURTAILED:
            assert decision.accepted is not None
            fits = _fits(reservation, decision.accepted)
            fits_reason = Reason(ReasonCode.BAND, reservation.id, fits)
            decision = NotificationDecision(
                reservation.id, DecisionStatus.REFUSED, None, (*decision.reasons, fits_reason)
            )
        await self.records.save_reservation(
            now,
            reservation,
            decision.status.value,
            decision.accepted,
            decision.reasons,
        )
        if decision.accepted is not None and check.plan is not None:
            self.reservations = [*others, decision.accepted]
            self.planned(check.plan, now)
        log.info(
            "reservation %s %s %s",
            reservation.id,
            decision.status.value,
            "; ".join(map(str, decision.reasons)),
        )
        return decision, True


def _fits(asked: Reservation, held: Reservation) -> str:
    """How much of a reservation would fit, as the smallest share of its bands."""
    shares = []
    for want, got in zip(asked.bands, held.bands, strict=True):
        for a, b in (
            (want.p_up_kw, got.p_up_kw),
            (want.p_down_kw, got.p_down_kw),
            (want.q_up_kvar, got.q_up_kvar),
            (want.q_down_kvar, got.q_down_kvar),
        ):
            if a > 0:
                shares.append(b / a)
    share = min(shares, default=0.0)
    return f"at most {100 * share:.0f} % of the reserved bands fit; nothing was held"
