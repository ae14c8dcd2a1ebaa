"""The point table: the latest reading of every mapped point, for the rest of the gateway.

Only the event loop thread writes to it. Listeners (store, Smart API state, flexibility)
subscribe to changes instead of polling the table; a listener is told once per update, with
the whole batch (a poll's readings), so the per-point cost of a listener is its own loop.

Every reading enters in its quantity's canonical unit (kW, kvar, kWh, %, V, ...): a point
mapped in W, var, Wh or MW is converted here, once, so the store, flexibility, status and
Smart API all see the same unit; the reading's `unit` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from gateway.config import LoadedConfig
from gateway.mapping import Device, Point, Quantity
from gateway.model import Quality, QualityFlag, Reading
from gateway.units import canonical_unit, convert

Listener = Callable[[Sequence[Reading]], None]
"""Told the readings of one update (canonical unit, mapped points only, in order), after
the table holds them all."""


@dataclass(frozen=True)
class MappedPoint:
    point: Point
    device: Device
    #: the unit the table holds this point's values in (its quantity's canonical unit)
    unit: str = field(init=False)

    def __post_init__(self) -> None:
        # worked out once per mapping, not per reading
        object.__setattr__(self, "unit", canonical_unit(self.point.quantity.value, self.point.unit))


def canonical(reading: Reading, mapped: MappedPoint) -> Reading:
    """The reading in its point's canonical unit (itself when it already is)."""
    target = mapped.unit
    value = reading.value
    if reading.unit == target or isinstance(value, bool):
        return reading
    if isinstance(value, int | float):
        value = convert(float(value), reading.unit, target)
    # built directly: dataclasses.replace costs several times more per reading
    return Reading(
        reading.point,
        value,
        target,
        reading.quality,
        reading.source_time,
        reading.gateway_time,
        reading.detail,
    )


class PointTable:
    def __init__(self, config: LoadedConfig) -> None:
        self._mapped: dict[str, MappedPoint] = {}
        self._latest: dict[str, Reading] = {}
        self._listeners: list[Listener] = []
        self.remap(config)

    def remap(self, config: LoadedConfig) -> None:
        """Follow a reloaded config: new points appear, removed points and their values go."""
        self._mapped = {p.id: MappedPoint(p, d) for d in config.devices for p in d.points}
        #: each point's canonical unit, the one thing a reading is checked against
        self._units = {point_id: m.unit for point_id, m in self._mapped.items()}
        self._latest = {k: r for k, r in self._latest.items() if k in self._mapped}
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
        return self._latest.get(point_id)

    def value(self, der: str, quantity: Quantity) -> float | None:
        """The latest good numeric value of the first point with this role, in the
        quantity's canonical unit."""
        for m in self.find(der, quantity):
            r = self._latest.get(m.point.id)
            if r is not None and r.quality.good and isinstance(r.value, int | float):
                return float(r.value)
        return None

    def snapshot(self) -> dict[str, Reading]:
        return dict(self._latest)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def update(self, readings: Iterable[Reading]) -> None:
        """Take a batch of readings (a poll's, or one pushed) and tell the listeners once."""
        unit_of, latest = self._units.get, self._latest
        batch: list[Reading] = []
        for raw in readings:
            point = raw.point
            unit = unit_of(point)
            if unit is None:
                continue  # a device pushed a point the mapping does not know
            # most points are mapped in their canonical unit: no call for those
            reading = raw if raw.unit == unit else canonical(raw, self._mapped[point])
            latest[point] = reading
            batch.append(reading)
        if batch:
            for listener in self._listeners:
                listener(batch)

    def mark_device_down(self, device: Device, detail: str) -> None:
        """Every point of a device whose link is down becomes invalid (comm failure)."""
        self.update(
            Reading(
                point=p.id,
                value=None,
                unit=canonical_unit(p.quantity.value, p.unit),
                quality=Quality.invalid(QualityFlag.COMM_FAILURE),
                detail=detail,
            )
            for p in device.points
            if p.direction.readable
        )
