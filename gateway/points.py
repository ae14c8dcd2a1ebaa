"""The point table: the latest reading of every mapped point, for the rest of the gateway.

Only the event loop thread writes to it. Listeners (store, Smart API state, flexibility)
subscribe to changes instead of polling the table; a listener is told once per update, with
the whole update (a poll's batches), so the per-point cost of a listener is its own loop.

Values enter as `Batch`es (a decoded block: one object for its points, their values in a
list) or as Readings, each of which reads as the batch of one point: one way in. The table
keeps, for each point, the batch (or reading) that carried its latest value, and builds a
Reading only when one is asked for (`latest`, `snapshot`, `value`): a poll of a few hundred
points is a few objects, not one per point.

Every value enters in its quantity's canonical unit (kW, kvar, kWh, %, V, ...): a point
mapped in W, var, Wh or MW is converted here, once, so the store, flexibility, status and
Smart API all see the same unit; the reading's `unit` says which. What a batch's point set
needs (which points are mapped, which convert) is worked out once per set, so a block whose
points are all mapped in their canonical unit passes as it came.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from weakref import WeakKeyDictionary

from gateway.config import LoadedConfig
from gateway.mapping import Device, Point, Quantity
from gateway.model import (
    GOOD,
    Acquired,
    Batch,
    PointSet,
    Quality,
    QualityFlag,
    Reading,
    Value,
    utcnow,
)
from gateway.units import canonical_unit, convert

Listener = Callable[[Sequence[Acquired]], None]
"""Told the batches (and readings) of one update (canonical unit, mapped points only, in
order), after the table holds them all."""


@dataclass(frozen=True)
class MappedPoint:
    point: Point
    device: Device
    #: the unit the table holds this point's values in (its quantity's canonical unit)
    unit: str = field(init=False)

    def __post_init__(self) -> None:
        # worked out once per mapping, not per reading
        object.__setattr__(self, "unit", canonical_unit(self.point.quantity.value, self.point.unit))


def _canonical_value(value: Value, unit: str, target: str) -> Value:
    if unit == target or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return convert(float(value), unit, target)


@dataclass(frozen=True)
class _Entry:
    """How the table takes the batches of one point set: what it keeps of them (positions,
    None: every point) and into which set; whether values convert (else they pass as they
    are)."""

    keep: tuple[int, ...] | None
    points: PointSet
    converts: bool
    #: the units the kept points' values come in
    units_from: tuple[str, ...]


class PointTable:
    def __init__(self, config: LoadedConfig) -> None:
        self._mapped: dict[str, MappedPoint] = {}
        #: each point's latest value: the batch that carried it
        self._latest: dict[str, Acquired] = {}
        #: what each point set of more than one point needs (a driver's block, the same
        #: object every poll; gone with it)
        self._entries: WeakKeyDictionary[PointSet, _Entry] = WeakKeyDictionary()
        self._listeners: list[Listener] = []
        self.remap(config)

    def remap(self, config: LoadedConfig) -> None:
        """Follow a reloaded config: new points appear, removed points and their values go."""
        self._mapped = {p.id: MappedPoint(p, d) for d in config.devices for p in d.points}
        #: each point's canonical unit, the one thing a reading is checked against
        self._units = {point_id: m.unit for point_id, m in self._mapped.items()}
        self._readable = frozenset(p for p, m in self._mapped.items() if m.point.direction.readable)
        self._latest = {k: b for k, b in self._latest.items() if k in self._mapped}
        self._entries = WeakKeyDictionary()
        # by role, in mapping order: the control path looks roles up many times per
        # dispatch, which must not scan a 10,000-point site each time
        self._by_role: dict[tuple[str | None, Quantity], list[MappedPoint]] = {}
        for m in self._mapped.values():
            self._by_role.setdefault((m.point.der, m.point.quantity), []).append(m)

    def __contains__(self, point_id: object) -> bool:
        return point_id in self._mapped

    def __iter__(self) -> Iterator[MappedPoint]:
        return iter(self._mapped.values())

    def mapped(self, point_id: str) -> MappedPoint | None:
        return self._mapped.get(point_id)

    def find(self, der: str, quantity: Quantity) -> list[MappedPoint]:
        """Points with this semantic role, in mapping order."""
        return list(self._by_role.get((der, quantity), ()))

    def latest(self, point_id: str) -> Reading | None:
        batch = self._latest.get(point_id)
        return None if batch is None else batch.reading(point_id)

    def readable_good(self) -> tuple[int, int]:
        """How many readable points there are, and how many of them are good now (the
        status line counts them every few seconds: one pass, no reading built)."""
        readable = self._readable
        good = sum(
            1
            for point, batch in self._latest.items()
            if (batch.quality is GOOD or batch.quality.good) and point in readable
        )
        return len(readable), good

    def quality(self, point_id: str) -> Quality | None:
        """The latest quality of a point (None before its first value), without building
        its reading: the status counts look at every point."""
        batch = self._latest.get(point_id)
        return None if batch is None else batch.quality

    def value(self, der: str, quantity: Quantity) -> float | None:
        """The latest good numeric value of the first point with this role, in the
        quantity's canonical unit."""
        for m in self.find(der, quantity):
            batch = self._latest.get(m.point.id)
            if batch is None or not batch.quality.good:
                continue
            value = batch.values[batch.points.index[m.point.id]]
            if isinstance(value, int | float):
                return float(value)
        return None

    def snapshot(self) -> dict[str, Reading]:
        return {point: batch.reading(point) for point, batch in self._latest.items()}

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def update(self, items: Iterable[Acquired]) -> None:
        """Take the batches and readings of an update (a poll's, or one pushed) and tell
        the listeners once."""
        latest = self._latest
        batches: list[Acquired] = []
        for item in items:
            batch = self._canonical(item)
            if batch is None:
                continue  # a device pushed points the mapping does not know
            ids = batch.points.ids
            if len(ids) == 1:
                latest[ids[0]] = batch
            else:
                latest.update(zip(ids, repeat(batch)))
            batches.append(batch)
        if batches:
            for listener in self._listeners:
                listener(batches)

    def _canonical(self, batch: Acquired) -> Acquired | None:
        """The batch's mapped points in their canonical units (itself when it is that
        already); None when none is mapped."""
        points = batch.points
        if len(points.ids) == 1:  # a reading, most often: no set to work out
            unit = self._units.get(points.ids[0])
            if unit is None:
                return None
            if unit == points.units[0]:
                return batch
            entry = self._entry(points)
        else:
            cached = self._entries.get(points)
            if cached is None:
                cached = self._entries[points] = self._entry(points)
            entry = cached
        if entry.keep is None and not entry.converts:
            return batch
        if not entry.points.ids:
            return None
        values: Sequence[Value] = batch.values
        if entry.keep is not None:
            values = [values[at] for at in entry.keep]
        if entry.converts:
            values = list(map(_canonical_value, values, entry.units_from, entry.points.units))
        return Batch(
            entry.points, values, batch.gateway_time, batch.quality, batch.source_time, batch.detail
        )

    def _entry(self, points: PointSet) -> _Entry:
        keep = [at for at, point in enumerate(points.ids) if point in self._units]
        ids = tuple(points.ids[at] for at in keep)
        units = tuple(self._units[point] for point in ids)
        units_from = tuple(points.units[at] for at in keep)
        if len(keep) == len(points.ids) and units == units_from:
            return _Entry(None, points, False, units_from)
        return _Entry(tuple(keep), PointSet(ids, units), units != units_from, units_from)

    def mark_device_down(self, device: Device, detail: str) -> None:
        """Every point of a device whose link is down becomes invalid (comm failure)."""
        readable = [p for p in device.points if p.direction.readable]
        if not readable:
            return
        self.update(
            [
                Batch(
                    PointSet(
                        tuple(p.id for p in readable),
                        tuple(canonical_unit(p.quantity.value, p.unit) for p in readable),
                    ),
                    [None] * len(readable),
                    utcnow(),
                    Quality.invalid(QualityFlag.COMM_FAILURE),
                    detail=detail,
                )
            ]
        )
