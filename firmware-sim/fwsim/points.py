"""What the simulator serves for one mapped point, in the point's own unit.

- A point whose DER (or coupling point) and quantity the physics models reads the model's
  value, converted from the model's canonical unit (kW, kvar, kWh, %, V, ...) into the
  point's unit, and a write to it is converted back and applied to the model.
- Any other point (no DER role, or a quantity the model does not have) reads a
  deterministic value that changes with simulated time, by quantity, within the point's
  write limits; once written, it keeps the written value.
- Points named in `Microgrid.failing` (`mgms sim --fail ID`) are answered with the
  protocol's device failure: tests use it to see a failure on purpose.

Every front end goes through `PointValues`, so a mapping in W serves W and an
integrator's own mapping file is served whatever roles its points have.
"""

from __future__ import annotations

import contextlib
import math
import threading
import zlib

from fwsim.physics import Microgrid, UnknownQuantity
from gateway.mapping import Point
from gateway.units import CANONICAL, DIMENSIONS, convert

#: (mean, swing) in the canonical unit of the quantity, for points the model does not drive
_SYNTHETIC: dict[str, tuple[float, float]] = {
    "KiloW": (2.0, 1.0),
    "KiloVAR": (0.5, 0.3),
    "PERCENT": (50.0, 20.0),
    "V": (230.0, 2.0),
    "A": (8.0, 2.0),
    "HZ": (50.0, 0.05),
    "DEG_C": (25.0, 5.0),
}
#: base unit of a dimension, for `other` points: their values are made in it
_BASE_OF_DIMENSION = {
    "active_power": "KiloW",
    "reactive_power": "KiloVAR",
    "apparent_power": "KiloV-A",
    "active_energy": "KiloW-HR",
    "reactive_energy": "KiloVAR-HR",
    "apparent_energy": "V-A-HR",
    "voltage": "V",
    "current": "A",
    "frequency": "HZ",
    "ratio": "PERCENT",
    "temperature": "DEG_C",
    "time": "SEC",
    "none": "UNITLESS",
}
#: a counter starts here and grows by this much per simulated hour (canonical unit)
_COUNTER_START, _COUNTER_PER_H = 10.0, 2.0
#: seconds of one synthetic swing
_PERIOD_S = 60.0


class PointFault(UnknownQuantity):
    """The simulator answers this point with a device failure."""


def _phase(point_id: str) -> float:
    """A stable phase per point, so neighbouring points do not move in step."""
    return (zlib.crc32(point_id.encode()) % 1000) / 1000 * 2 * math.pi


class PointValues:
    """Thread-safe: front ends call it from their servers' threads."""

    def __init__(self, grid: Microgrid) -> None:
        self.grid = grid
        self.failing = grid.failing
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def modelled(self, point: Point) -> bool:
        """The physics drives this point (reads it, or takes writes to it)."""
        return point.der is not None and self.grid.serves(point.der, point.quantity)

    def value(self, point: Point) -> float:
        """The point's value in its own unit; PointFault for a failing point."""
        if point.id in self.failing:
            raise PointFault(f"point {point.id!r} is made to fail")
        if point.der is not None:
            quantity = point.quantity
            try:
                model = self.grid.value(point.der, quantity)
            except UnknownQuantity:
                pass
            else:
                return convert(model, _model_unit(point), point.unit)
        with self._lock:
            written = self._written.get(point.id)
        return written if written is not None else self.synthetic(point)

    def write(self, point: Point, value: float) -> None:
        """Apply a written value (in the point's unit) to the model, and keep it."""
        if point.id in self.failing:
            raise PointFault(f"point {point.id!r} is made to fail")
        if point.der is not None:
            model = convert(value, point.unit, _model_unit(point))
            # a set point the model does not act on still keeps its value
            with contextlib.suppress(UnknownQuantity):
                self.grid.apply(point.der, point.quantity, model)
        with self._lock:
            self._written[point.id] = value

    def synthetic(self, point: Point) -> float:
        """A deterministic value that moves with simulated time, in the point's unit."""
        t = self.grid.clock.elapsed()
        unit = _model_unit(point)
        dim = DIMENSIONS[unit][0]
        if dim in ("none", "time"):
            value = 1.0  # a status that is on, a duration of a second
        elif dim in ("active_energy", "reactive_energy", "apparent_energy"):
            value = _COUNTER_START + _COUNTER_PER_H * t / 3600  # counters only grow
        else:
            mean, swing = _SYNTHETIC.get(unit, (1.0, 0.5))
            value = mean + swing * math.sin(2 * math.pi * t / _PERIOD_S + _phase(point.id))
        value = convert(value, unit, point.unit)
        if point.limits is not None:
            low = point.limits.min if point.limits.min is not None else -math.inf
            high = point.limits.max if point.limits.max is not None else math.inf
            value = min(max(value, low), high)
        return value


def _model_unit(point: Point) -> str:
    """The unit the model (or the synthetic source) gives this point's quantity in."""
    canonical = CANONICAL.get(point.quantity.value)
    if canonical is not None:
        return canonical
    return _BASE_OF_DIMENSION.get(DIMENSIONS[point.unit][0], point.unit)
