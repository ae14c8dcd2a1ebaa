"""What the flexibility service talks to beyond the gateway core: its clock, where its
messages for the AMS go, and who watches it. The composition root supplies them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol

from gateway.flex.model import Activation, ActivationDecision, FlexForecast, Verification


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
