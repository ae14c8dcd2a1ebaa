"""The firmware-sim physics driven in simulated time, wired to the flexibility service the
way the gateway wires it: readings into a point table and a history, commands onto the
physics through the mapped point roles. No sockets: the scenario tests exercise the
flexibility logic against the physics; the protocol paths have their own integration tests.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from fwsim.clock import SimClock
from fwsim.physics import LoadModel, Microgrid, PvModel, UnknownQuantity
from gateway.config import Der, LoadedConfig
from gateway.flex.model import FlexForecast, Verification
from gateway.loader import load_config
from gateway.model import Acquired, Command, CommandResult, CommandStatus, Reading
from gateway.points import PointTable

ROOT = Path(__file__).resolve().parents[2]
#: the flexibility tests' microgrid (the demo's battery, PV and load over Modbus)
FLEX_CONFIG = Path(__file__).resolve().parent / "flex-microgrid.yaml"


class ManualClock(SimClock):
    """Simulated time that moves only when told."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start, 1.0)
        self._elapsed = 0.0

    def elapsed(self) -> float:
        return self._elapsed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self._elapsed)

    def advance(self, seconds: float) -> None:
        self._elapsed += seconds


@dataclass(frozen=True)
class Stored:
    time: datetime
    value: float | None


class MemoryHistory:
    """The store's `range` over readings kept in memory."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}
        self._rows: dict[str, list[Stored]] = {}

    def add_all(self, batches: Iterable[Acquired]) -> None:
        """The point table's listener: every value kept."""
        for batch in batches:
            t = batch.gateway_time
            for point, value in zip(batch.points.ids, batch.values, strict=True):
                self._times.setdefault(point, []).append(t.timestamp())
                self._rows.setdefault(point, []).append(
                    Stored(t, float(value) if isinstance(value, int | float) else None)
                )

    async def range(self, point: str, start: datetime, end: datetime) -> list[Stored]:
        times = self._times.get(point, [])
        lo = bisect.bisect_left(times, start.timestamp())
        hi = bisect.bisect_left(times, end.timestamp())
        return self._rows.get(point, [])[lo:hi]


class PhysicsController:
    """Writes commands straight onto the physics by the point's DER and quantity."""

    def __init__(self, grid: Microgrid, table: PointTable) -> None:
        self.grid = grid
        self.table = table
        self.written: list[Command] = []
        self.refuse: set[str] = set()

    async def write(self, command: Command) -> CommandResult:
        mapped = self.table.mapped(command.point)
        assert mapped is not None and mapped.point.der is not None
        if command.point in self.refuse:
            return CommandResult(command, CommandStatus.REJECTED, "refused by the test")
        self.written.append(command)
        self.grid.apply(mapped.point.der, mapped.point.quantity, float(command.value))
        return CommandResult(command, CommandStatus.CONFIRMED)


@dataclass
class Publisher:
    forecasts: list[FlexForecast] = field(default_factory=list)
    verifications: list[Verification] = field(default_factory=list)

    async def forecast(self, message: FlexForecast) -> None:
        self.forecasts.append(message)

    async def verification(self, message: Verification) -> None:
        self.verifications.append(message)


class Weather:
    """A day-by-day cloud factor and a slow random walk on top of the clear-sky PV, a
    day-by-day level and noise on the load: history that a forecast can get wrong. It acts
    on P only (the meter's energy counters do not see it): use it for forecast tests."""

    def __init__(self, seed: int = 7, cloud_min: float = 0.55, load_spread: float = 0.1) -> None:
        self.rng = random.Random(seed)
        self.cloud_min = cloud_min
        self.load_spread = load_spread
        self.days: dict[int, float] = {}
        self.load_days: dict[int, float] = {}
        self.walk = 0.0

    def pv_factor(self, t: datetime) -> float:
        day = t.toordinal()
        if day not in self.days:
            self.days[day] = self.rng.uniform(self.cloud_min, 1.0)
        self.walk = max(-0.15, min(0.15, 0.98 * self.walk + self.rng.gauss(0, 0.01)))
        return max(0.0, min(1.0, self.days[day] + self.walk))

    def load_factor(self, t: datetime) -> float:
        day = t.toordinal()
        if day not in self.load_days:
            spread = self.load_spread
            self.load_days[day] = self.rng.uniform(1 - spread, 1 + spread)
        return self.load_days[day] * (1 + self.rng.gauss(0, 0.02))


class Bench:
    """The demo microgrid's physics, point table and history, stepped in simulated time."""

    def __init__(
        self,
        start: datetime,
        config: LoadedConfig | None = None,
        weather: Weather | None = None,
        sample_s: float = 1.0,
    ) -> None:
        self.config = config or load_config(FLEX_CONFIG)
        self.clock = ManualClock(start)
        gw = self.config.gateway
        self.grid = Microgrid.build(gw.ders, gw.coupling_point, self.clock)
        self.table = PointTable(self.config)
        self.history = MemoryHistory()
        self.table.listen(self.history.add_all)
        self.controller = PhysicsController(self.grid, self.table)
        self.weather = weather
        self.sample_s = sample_s
        self._since_sample = math.inf
        self.step_hooks: list[Callable[[Bench], None]] = []
        self.sample()

    def now(self) -> datetime:
        return self.clock.now()

    @classmethod
    def warmed(cls, start: datetime, days: float = 2.0, sample_s: float = 2.0) -> Bench:
        """A bench at `start` with `days` of history behind it (sampled every minute)."""
        bench = cls(start - timedelta(days=days), sample_s=60.0)
        bench.advance(days * 86400, step=60.0)
        bench.sample_s = sample_s
        return bench

    def _apply_weather(self) -> None:
        if self.weather is None:
            return
        now = self.clock.now()
        factor = self.weather.pv_factor(now)
        load = self.weather.load_factor(now)
        for model in self.grid.ders.values():
            if isinstance(model, PvModel):
                # clouds lower what is available; the inverter's own ceiling stays apart
                model.available_kw *= factor
                model.p_kw = min(model.p_kw, model.available_kw)
            elif isinstance(model, LoadModel):
                model.p_kw *= load

    def sample(self) -> None:
        now = self.clock.now()
        readings = []
        for mapped in self.table:
            point = mapped.point
            if not point.direction.readable or point.der is None:
                continue
            try:
                value = self.grid.value(point.der, point.quantity)
            except UnknownQuantity:
                continue
            readings.append(Reading(point.id, value, point.unit, gateway_time=now))
        self.table.update(readings)

    def advance(self, seconds: float, step: float = 1.0) -> None:
        left = seconds
        while left > 1e-9:
            dt = min(step, left)
            self.clock.advance(dt)
            self.grid.step()
            self._apply_weather_and_meter()
            for hook in self.step_hooks:
                hook(self)
            left -= dt
            self._since_sample += dt
            if self._since_sample >= self.sample_s - 1e-9:
                self.sample()
                self._since_sample = 0.0

    def _apply_weather_and_meter(self) -> None:
        if self.weather is None:
            return
        self._apply_weather()
        # the meter must see the clouded PV: recompute it from the DERs
        p = sum(m.p_kw for m in self.grid.ders.values())
        q = sum(m.q_kvar for m in self.grid.ders.values())
        meter = self.grid.meter
        meter.p_kw, meter.q_kvar = -p, -q


class BenchClock:
    """The service's clock: simulated time; sleeping advances the physics."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def now(self) -> datetime:
        return self.bench.now()

    async def sleep(self, seconds: float) -> None:
        self.bench.advance(seconds)


def demo_ders() -> dict[str, Der]:
    """The test microgrid's DERs by id."""
    return {d.id: d for d in load_config(FLEX_CONFIG).gateway.ders}
