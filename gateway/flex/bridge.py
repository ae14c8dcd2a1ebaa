"""The flexibility service as the northbound layer sees it.

`FlexReserveHandler` is the business end of the inbound pipeline (the `ReserveHandler` of
gateway.north.ports): it turns Reserve Notifications and Activations into reservations and
activations, lets the service decide, and raises `ReserveRefused` (a stable reason and a
text naming the conflicting service or limit) when the answer is no. The service decides,
holds and records in one step, so the `check_*` methods only check that the message is
for this microgrid. A notification that fits only in part is refused whole (the answer
says how much fits): the Smart API answer has no way to accept part of a purchase.
Repeats by message id get the recorded answer again and change nothing.

`NorthPublisher` is the service's `FlexPublisher` on the northbound outbox: forecasts and
verifications become Smart API messages signed and queued by `send`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from gateway.errors import RefusalReason, ReserveRefused
from gateway.flex.messages import (
    activation_of,
    forecast_message,
    reservation_of,
    verification_message,
)
from gateway.flex.model import (
    DecisionStatus,
    FlexForecast,
    Reason,
    ReasonCode,
    Verification,
)
from gateway.flex.service import FlexService
from gateway.smartapi import flexibility as sa

#: the stable refusal codes, by the code of the first reason
REFUSAL: dict[ReasonCode, RefusalReason] = {
    ReasonCode.RESERVE: RefusalReason.CONFLICTS_WITH_RESERVE,
    ReasonCode.COUPLING_POINT: RefusalReason.COUPLING_POINT_LIMIT,
    ReasonCode.INTERNAL_LIMIT: RefusalReason.INTERNAL_LIMIT,
    ReasonCode.DER_LIMIT: RefusalReason.INSUFFICIENT_FLEXIBILITY,
    ReasonCode.ENERGY: RefusalReason.INSUFFICIENT_ENERGY,
    ReasonCode.REACTIVE: RefusalReason.INSUFFICIENT_REACTIVE,
    ReasonCode.RAMP: RefusalReason.INSUFFICIENT_FLEXIBILITY,
    ReasonCode.BAND: RefusalReason.OUTSIDE_BAND,
    ReasonCode.NO_RESERVATION: RefusalReason.UNKNOWN_NOTIFICATION,
    ReasonCode.PERIOD: RefusalReason.OUTSIDE_WINDOW,
    ReasonCode.CONTROL: RefusalReason.CONTROL_FAILED,
}


def refusal(reasons: tuple[Reason, ...]) -> ReserveRefused:
    code = REFUSAL[reasons[0].code] if reasons else RefusalReason.REFUSED
    return ReserveRefused(code, "; ".join(r.message for r in reasons) or "refused")


class FlexReserveHandler:
    def __init__(self, service: FlexService) -> None:
        self.service = service

    def _mine(self, message: sa.FlexMessage) -> None:
        if message.microgrid != self.service.model.microgrid:
            raise ReserveRefused(
                RefusalReason.WRONG_MICROGRID,
                f"message for microgrid {message.microgrid!r}, this is "
                f"{self.service.model.microgrid!r}",
            )

    async def check_notification(self, notification: sa.ReserveNotification) -> None:
        self._mine(notification)

    async def apply_notification(self, notification: sa.ReserveNotification) -> None:
        decision = await self.service.notify(reservation_of(notification), partial=False)
        if decision.status is not DecisionStatus.ACCEPTED:
            raise refusal(decision.reasons)

    async def check_activation(self, activation: sa.ReserveActivation) -> None:
        self._mine(activation)

    async def apply_activation(self, activation: sa.ReserveActivation) -> None:
        reservation = self.service.reservation(activation.notification)
        decision = await self.service.activate(activation_of(activation, reservation))
        if decision.status is DecisionStatus.REFUSED:
            raise refusal(decision.reasons)


Send = Callable[[sa.FlexibilityForecast | sa.ReserveVerification], Awaitable[bool]]


class NorthPublisher:
    def __init__(
        self,
        send: Send,
        sender: str,
        microgrid: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._send = send
        self._sender = sender
        self._microgrid = microgrid
        self._clock = clock

    async def forecast(self, message: FlexForecast) -> None:
        await self._send(forecast_message(message, self._sender))

    async def verification(self, message: Verification) -> None:
        out = verification_message(message, self._sender, self._microgrid, self._clock())
        if out is not None:
            await self._send(out)
