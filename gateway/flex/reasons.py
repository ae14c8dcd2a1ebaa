"""Names for LP rows and bounds, and how binding ones become operator-readable reasons.

Every row and variable block of a flexibility LP carries a `Tag`: which limit it is (code
and subject) and what to say when it holds the optimum at its lower or upper side. After a
solve the binding tags of one interval are grouped over intervals into `Reason`s such as
"coupling point export limit 150 kW (4 intervals 12:00-13:00)".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.flex.intervals import Horizon
from gateway.flex.model import Reason, ReasonCode


@dataclass(frozen=True)
class Tag:
    code: ReasonCode
    subject: str
    #: text when the lower side binds, and when the upper side binds
    lower: str
    upper: str
    interval: int | None = None

    def at(self, interval: int) -> Tag:
        return Tag(self.code, self.subject, self.lower, self.upper, interval)

    def series(self, first: int) -> Callable[[int], Tag]:
        """Labels for a block of rows or columns covering intervals first, first+1, ..."""
        return lambda i: self.at(first + i)

    def text(self, upper: bool) -> str:
        return self.upper if upper else self.lower


def same(code: ReasonCode, subject: str, text: str) -> Tag:
    return Tag(code, subject, text, text)


@dataclass(frozen=True)
class Hit:
    """A binding tag and which side of it binds."""

    tag: Tag
    upper: bool


def group(hits: Iterable[Hit], horizon: Horizon | None) -> tuple[Reason, ...]:
    """One reason per distinct limit text, naming the intervals where it binds."""
    seen: dict[tuple[ReasonCode, str, str], list[int]] = {}
    for hit in hits:
        key = (hit.tag.code, hit.tag.subject, hit.tag.text(hit.upper))
        slots = seen.setdefault(key, [])
        if hit.tag.interval is not None and hit.tag.interval not in slots:
            slots.append(hit.tag.interval)
    out = []
    for (code, subject, text), slots in seen.items():
        if slots and horizon is not None:
            slots.sort()
            first = horizon.start_of(slots[0])
            last = horizon.end_of(slots[-1])
            n = len(slots)
            text = f"{text} ({n} interval{'s' if n > 1 else ''} {first:%H:%M}-{last:%H:%M})"
        out.append(Reason(code, subject, text))
    return tuple(out)
