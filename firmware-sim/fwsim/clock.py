"""Simulated time that may run faster than the wall clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class SimClock:
    """`speed` simulated seconds pass per wall-clock second, from `start`."""

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, not {speed}")
        self.start = start or datetime.now(UTC)
        self.speed = speed
        self._t0 = time.monotonic()

    def elapsed(self) -> float:
        """Simulated seconds since start."""
        return (time.monotonic() - self._t0) * self.speed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed())
