"""DER physics: battery, PV inverter, controllable load, generator and the coupling-point
meter that sums them, stepped in simulated time.

Sign convention (as in the gateway): DER P > 0 injects into the microgrid (PV output,
battery discharge); a load's P is negative. The coupling-point meter reports P > 0 when
the microgrid imports from the grid. Power in kW, energy in kWh, SOC in percent.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fwsim.clock import SimClock
from gateway.config import CouplingPoint, Der, DerType
from gateway.mapping import Quantity


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _hour_of_day(t: datetime) -> float:
    return t.hour + t.minute / 60 + t.second / 3600


@dataclass
class DerModel(ABC):
    der: Der
    p_kw: float = 0.0
    q_kvar: float = 0.0
    q_set_kvar: float = 0.0
    online: bool = True

    @abstractmethod
    def step(self, now: datetime, dt_s: float) -> None:
        """Advance the model by dt_s simulated seconds ending at `now`."""

    def _q_limit(self) -> float:
        r = self.der.ratings
        if r.s_max_kva is None:
            return abs(r.q_max_kvar or 0.0)
        return math.sqrt(max(r.s_max_kva**2 - self.p_kw**2, 0.0))

    def _follow_q(self) -> None:
        lim = self._q_limit()
        self.q_kvar = _clamp(self.q_set_kvar, -lim, lim) if self.online else 0.0

    def _ramp(self, target: float, dt_s: float) -> float:
        ramp = self.der.ratings.ramp_kw_per_s
        if ramp is None:
            return target
        step = ramp * dt_s
        return _clamp(target, self.p_kw - step, self.p_kw + step)

    def quantities(self) -> dict[Quantity, Callable[[], float]]:
        return {
            Quantity.ACTIVE_POWER: lambda: self.p_kw,
            Quantity.REACTIVE_POWER: lambda: self.q_kvar,
            Quantity.REACTIVE_POWER_SETPOINT: lambda: self.q_set_kvar,
            Quantity.STATUS: lambda: 1.0 if self.online else 0.0,
            Quantity.SWITCH: lambda: 1.0 if self.online else 0.0,
        }

    def setters(self) -> dict[Quantity, Callable[[float], None]]:
        return {Quantity.REACTIVE_POWER_SETPOINT: self._set_q, Quantity.SWITCH: self._set_online}

    def _set_q(self, value: float) -> None:
        self.q_set_kvar = value

    def _set_online(self, value: float) -> None:
        self.online = bool(value)


@dataclass
class BatteryModel(DerModel):
    p_set_kw: float = 0.0
    soc_pct: float = 50.0

    @property
    def energy_kwh(self) -> float:
        return (self.der.ratings.energy_kwh or 0.0) * self.soc_pct / 100

    def step(self, now: datetime, dt_s: float) -> None:
        r = self.der.ratings
        capacity = r.energy_kwh or 0.0
        target = _clamp(self.p_set_kw, r.p_min_kw, r.p_max_kw) if self.online else 0.0
        dt_h = dt_s / 3600
        # energy window: never discharge below soc_min or charge above soc_max
        e_now = capacity * self.soc_pct / 100
        e_min, e_max = capacity * r.soc_min_pct / 100, capacity * r.soc_max_pct / 100
        if dt_h > 0:
            max_dis = max(e_now - e_min, 0.0) * r.efficiency_discharge / dt_h
            max_ch = max(e_max - e_now, 0.0) / r.efficiency_charge / dt_h
            target = _clamp(target, -max_ch, max_dis)
        self.p_kw = self._ramp(target, dt_s)
        if self.p_kw >= 0:
            e_now -= self.p_kw * dt_h / r.efficiency_discharge
        else:
            e_now -= self.p_kw * dt_h * r.efficiency_charge
        self.soc_pct = _clamp(100 * e_now / capacity, 0.0, 100.0) if capacity else 0.0
        self._follow_q()

    def quantities(self) -> dict[Quantity, Callable[[], float]]:
        return {
            **super().quantities(),
            Quantity.ACTIVE_POWER_SETPOINT: lambda: self.p_set_kw,
            Quantity.STATE_OF_CHARGE: lambda: self.soc_pct,
            Quantity.ENERGY_CAPACITY: lambda: self.der.ratings.energy_kwh or 0.0,
        }

    def setters(self) -> dict[Quantity, Callable[[float], None]]:
        return {**super().setters(), Quantity.ACTIVE_POWER_SETPOINT: self._set_p}

    def _set_p(self, value: float) -> None:
        self.p_set_kw = value


@dataclass
class PvModel(DerModel):
    """Clear-sky bell between 06:00 and 18:00 simulated time; curtailable in percent."""

    limit_pct: float = 100.0
    available_kw: float = 0.0

    def step(self, now: datetime, dt_s: float) -> None:
        rating = self.der.ratings.p_max_kw
        h = _hour_of_day(now)
        self.available_kw = (
            rating * max(0.0, math.sin(math.pi * (h - 6) / 12)) if 6 < h < 18 else 0.0
        )
        ceiling = rating * _clamp(self.limit_pct, 0.0, 100.0) / 100
        self.p_kw = min(self.available_kw, ceiling) if self.online else 0.0
        self._follow_q()

    def quantities(self) -> dict[Quantity, Callable[[], float]]:
        return {
            **super().quantities(),
            Quantity.ACTIVE_POWER_LIMIT: lambda: self.limit_pct,
            Quantity.AVAILABLE_POWER: lambda: self.available_kw,
        }

    def setters(self) -> dict[Quantity, Callable[[float], None]]:
        return {**super().setters(), Quantity.ACTIVE_POWER_LIMIT: self._set_limit}

    def _set_limit(self, value: float) -> None:
        self.limit_pct = value


@dataclass
class LoadModel(DerModel):
    """Demand with a morning and an evening peak; a curtailment share in percent of
    the flexible part (p_max_kw - p_min_kw of the ratings is the curtailable band)."""

    curtail_pct: float = 0.0
    demand_kw: float = 0.0

    def step(self, now: datetime, dt_s: float) -> None:
        r = self.der.ratings
        peak = -r.p_min_kw  # p_min_kw is the largest consumption (negative)
        h = _hour_of_day(now)
        shape = 0.45 + 0.3 * math.exp(-((h - 8) ** 2) / 4) + 0.4 * math.exp(-((h - 19) ** 2) / 6)
        self.demand_kw = peak * min(shape, 1.0)
        flexible = self.demand_kw * _clamp(self.curtail_pct, 0.0, 100.0) / 100
        target = -(self.demand_kw - flexible) if self.online else 0.0
        self.p_kw = self._ramp(target, dt_s)
        self._follow_q()

    def quantities(self) -> dict[Quantity, Callable[[], float]]:
        return {**super().quantities(), Quantity.ACTIVE_POWER_LIMIT: lambda: self.curtail_pct}

    def setters(self) -> dict[Quantity, Callable[[float], None]]:
        return {**super().setters(), Quantity.ACTIVE_POWER_LIMIT: self._set_curtail}

    def _set_curtail(self, value: float) -> None:
        self.curtail_pct = value


@dataclass
class GeneratorModel(DerModel):
    """A dispatchable unit (e.g. CHP) with a generation meter (`energy_export`, kWh)."""

    p_set_kw: float = 0.0
    energy_kwh: float = 0.0

    def step(self, now: datetime, dt_s: float) -> None:
        r = self.der.ratings
        target = _clamp(self.p_set_kw, r.p_min_kw, r.p_max_kw) if self.online else 0.0
        if r.min_stable_kw and 0 < target < r.min_stable_kw:
            target = 0.0
        self.p_kw = self._ramp(target, dt_s)
        self.energy_kwh += max(self.p_kw, 0.0) * dt_s / 3600
        self._follow_q()

    def quantities(self) -> dict[Quantity, Callable[[], float]]:
        return {
            **super().quantities(),
            Quantity.ACTIVE_POWER_SETPOINT: lambda: self.p_set_kw,
            Quantity.ENERGY_EXPORT: lambda: self.energy_kwh,
        }

    def setters(self) -> dict[Quantity, Callable[[float], None]]:
        return {**super().setters(), Quantity.ACTIVE_POWER_SETPOINT: self._set_p}

    def _set_p(self, value: float) -> None:
        self.p_set_kw = value


@dataclass
class CouplingMeter:
    """The point of common coupling: P/Q import is minus the sum of DER injections."""

    point: CouplingPoint
    p_kw: float = 0.0
    q_kvar: float = 0.0
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    q_import_kvarh: float = 0.0
    q_export_kvarh: float = 0.0
    voltage_v: float = 230.0
    frequency_hz: float = 50.0

    def step(self, p_injected: float, q_injected: float, dt_s: float) -> None:
        self.p_kw, self.q_kvar = -p_injected, -q_injected
        dt_h = dt_s / 3600
        if self.p_kw >= 0:
            self.import_kwh += self.p_kw * dt_h
        else:
            self.export_kwh -= self.p_kw * dt_h
        if self.q_kvar >= 0:
            self.q_import_kvarh += self.q_kvar * dt_h
        else:
            self.q_export_kvarh -= self.q_kvar * dt_h
        # a stiff grid: voltage drops slightly with import
        self.voltage_v = 230.0 - 0.02 * self.p_kw

    def quantities(self) -> dict[Quantity, Callable[[], float]]:
        return {
            Quantity.ACTIVE_POWER: lambda: self.p_kw,
            Quantity.REACTIVE_POWER: lambda: self.q_kvar,
            Quantity.ENERGY_IMPORT: lambda: self.import_kwh,
            Quantity.ENERGY_EXPORT: lambda: self.export_kwh,
            Quantity.REACTIVE_ENERGY_IMPORT: lambda: self.q_import_kvarh,
            Quantity.REACTIVE_ENERGY_EXPORT: lambda: self.q_export_kvarh,
            Quantity.VOLTAGE: lambda: self.voltage_v,
            Quantity.CURRENT: lambda: abs(self.p_kw) * 1000 / (3 * self.voltage_v),
            Quantity.FREQUENCY: lambda: self.frequency_hz,
        }


_MODELS: dict[DerType, type[DerModel]] = {
    DerType.BATTERY: BatteryModel,
    DerType.PV: PvModel,
    DerType.LOAD: LoadModel,
    DerType.GENERATOR: GeneratorModel,
    DerType.EV_CHARGER: LoadModel,
}


class UnknownQuantity(KeyError):
    pass


@dataclass
class Microgrid:
    """All DER models and the coupling meter, advanced together. Thread-safe: protocol
    front ends read and write from their own threads."""

    clock: SimClock
    ders: dict[str, DerModel]
    meter: CouplingMeter
    #: point ids the front ends answer with a device failure (`mgms sim --fail`)
    failing: frozenset[str] = frozenset()
    _last: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, ders: list[Der], coupling: CouplingPoint, clock: SimClock) -> Microgrid:
        models = {d.id: _MODELS[d.type](der=d) for d in ders}
        grid = cls(clock=clock, ders=models, meter=CouplingMeter(point=coupling))
        grid.step()
        return grid

    def step(self) -> None:
        """Advance every model to the clock's current simulated time."""
        with self._lock:
            elapsed = self.clock.elapsed()
            dt = max(elapsed - self._last, 0.0)
            self._last = elapsed
            now = self.clock.now()
            for model in self.ders.values():
                model.step(now, dt)
            p = sum(m.p_kw for m in self.ders.values())
            q = sum(m.q_kvar for m in self.ders.values())
            self.meter.step(p, q, dt)

    def _quantities(self, asset: str) -> dict[Quantity, Callable[[], float]]:
        if asset == self.meter.point.id:
            return self.meter.quantities()
        if asset in self.ders:
            return self.ders[asset].quantities()
        raise UnknownQuantity(f"no DER or meter {asset!r} in the simulated microgrid")

    def value(self, asset: str, quantity: Quantity) -> float:
        with self._lock:
            getter = self._quantities(asset).get(quantity)
            if getter is None:
                raise UnknownQuantity(f"{asset!r} has no quantity {quantity.value!r}")
            return getter()

    def serves(self, asset: str, quantity: Quantity) -> bool:
        try:
            return quantity in self._quantities(asset) or quantity in self._setters(asset)
        except UnknownQuantity:
            return False

    def _setters(self, asset: str) -> dict[Quantity, Callable[[float], None]]:
        if asset in self.ders:
            return self.ders[asset].setters()
        return {}

    def apply(self, asset: str, quantity: Quantity, value: float) -> None:
        """Apply a set point; the change shows in the next step."""
        with self._lock:
            setter = self._setters(asset).get(quantity)
            if setter is None:
                raise UnknownQuantity(f"{asset!r} does not accept {quantity.value!r}")
            setter(value)
