"""A meter's load profile as the gateway uses it: entries of cumulative register values,
and the energy of each capture interval (the 15-minute values verification settles on).

No I/O and no protocol library here; the driver fills these from a Profile Generic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.units import DIMENSIONS

_ENERGY = frozenset({"active_energy", "reactive_energy", "apparent_energy"})


@dataclass(frozen=True, slots=True)
class ProfileColumn:
    """One capture object. `key` is the mapped point id when a point addresses the same
    attribute, else the address `class/OBIS/attribute`; `unit` a QUDT local name."""

    key: str
    address: str
    unit: str

    @property
    def is_energy(self) -> bool:
        """A cumulative energy register: its differences are interval energies."""
        dimension = DIMENSIONS.get(self.unit)
        return dimension is not None and dimension[0] in _ENERGY


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """One buffer row; `time` is the capture time (the end of the interval)."""

    time: datetime
    values: tuple[float | int | bool | None, ...]


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    """Energy per cumulative column over [start, end), by column key."""

    start: datetime
    end: datetime
    energy: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadProfile:
    device: str
    capture_period_s: int
    columns: tuple[ProfileColumn, ...]
    entries: tuple[ProfileEntry, ...]

    def column(self, key: str) -> int:
        for i, col in enumerate(self.columns):
            if key in (col.key, col.address):
                return i
        raise KeyError(f"load profile of {self.device!r} has no column {key!r}")

    def values(self, key: str) -> list[tuple[datetime, float | int | bool | None]]:
        i = self.column(key)
        return [(e.time, e.values[i]) for e in self.entries]

    def intervals(self) -> list[IntervalEnergy]:
        """Energy of every interval between consecutive entries, for the cumulative
        energy columns. An interval longer than the capture period (a gap: power cut,
        clock set) is kept and spans the gap; a counter that went backwards (reset,
        replacement) gives no value for that interval."""
        energy_cols = [(i, c) for i, c in enumerate(self.columns) if c.is_energy]
        out: list[IntervalEnergy] = []
        for prev, cur in itertools.pairwise(self.entries):
            energy: dict[str, float] = {}
            for i, col in energy_cols:
                a, b = _number(prev.values[i]), _number(cur.values[i])
                if a is not None and b is not None and b >= a:
                    energy[col.key] = b - a
            out.append(IntervalEnergy(prev.time, cur.time, energy))
        return out


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def merge_entries(chunks: Sequence[Sequence[ProfileEntry]]) -> tuple[ProfileEntry, ...]:
    """Entries of several range requests in time order, each capture time once (range
    bounds are inclusive, so adjacent windows share their boundary entry)."""
    by_time: dict[datetime, ProfileEntry] = {}
    for chunk in chunks:
        for entry in chunk:
            by_time.setdefault(entry.time, entry)
    return tuple(by_time[t] for t in sorted(by_time))
