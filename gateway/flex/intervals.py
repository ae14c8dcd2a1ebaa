"""The interval grid of the flexibility functions: fixed-length intervals (15 min by default,
like the imbalance settlement period) aligned to midnight UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_time(t: datetime, step: timedelta) -> datetime:
    """The start of the interval of length `step` that contains `t`."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t.isoformat()}: the interval grid needs UTC")
    n = (t - EPOCH) // step
    return EPOCH + n * step


@dataclass(frozen=True)
class Horizon:
    """`count` intervals of length `step` from `start`."""

    start: datetime
    step: timedelta
    count: int

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("horizon start must be timezone-aware")
        if self.step <= timedelta(0):
            raise ValueError(f"interval length must be positive, not {self.step}")
        if self.count < 1:
            raise ValueError(f"a horizon needs at least one interval, not {self.count}")

    @classmethod
    def covering(cls, now: datetime, step: timedelta, duration: timedelta) -> Horizon:
        """The horizon that starts with the interval containing `now` and lasts `duration`."""
        count = max(1, -(-duration // step))
        return cls(floor_time(now, step), step, count)

    @property
    def step_h(self) -> float:
        return self.step.total_seconds() / 3600

    @property
    def end(self) -> datetime:
        return self.start + self.count * self.step

    def start_of(self, i: int) -> datetime:
        return self.start + i * self.step

    def end_of(self, i: int) -> datetime:
        return self.start + (i + 1) * self.step

    def starts(self) -> list[datetime]:
        return [self.start_of(i) for i in range(self.count)]

    def index(self, t: datetime) -> int | None:
        """The interval containing `t`, or None outside the horizon."""
        if t < self.start or t >= self.end:
            return None
        return (t - self.start) // self.step

    def shifted(self, delta: timedelta) -> Horizon:
        return Horizon(self.start + delta, self.step, self.count)

    def label(self, i: int) -> str:
        """Interval i as `HH:MM-HH:MM` (UTC), for messages."""
        return f"{self.start_of(i):%H:%M}-{self.end_of(i):%H:%M}"
