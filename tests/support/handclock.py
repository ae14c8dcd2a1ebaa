"""A simulator clock for tests: simulated time moves only when the test says so."""

from __future__ import annotations

from datetime import datetime, timedelta

from fwsim.clock import SimClock


class HandClock(SimClock):
    """Simulated time that moves only when the test says so (`seconds`)."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start=start)
        self.seconds = 0.0

    def elapsed(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)
