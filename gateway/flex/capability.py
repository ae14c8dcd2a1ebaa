"""What each DER can do: its power range, reactive capability, storage and energy need,
from its config ratings, its point roles and its live readings.

Sign convention (as everywhere in the gateway): DER P > 0 injects into the microgrid.
A DER's *natural* P is what it does when the MGMS leaves it alone: a battery idles, PV
produces what is available, a load consumes its demand, an EV charges at full rate from
arrival until its energy is in, a generator keeps its output.

Reactive capability is the intersection of the limits given: the S circle
|Q| <= sqrt(S^2 - P^2), the power-factor cone |Q| <= tan(acos(pf_min)) |P| and the
fixed q_min/q_max. With none given the DER offers no Q. Inside the LP the circle becomes
an inscribed 16-gon (never promises more than the circle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from gateway.config import ControlManner, Der, DerType
from gateway.flex.intervals import Horizon
from gateway.flex.ports import PointValues
from gateway.mapping import Quantity

Floats = NDArray[np.float64]

#: sides of the polygon that approximates the S circle from inside
POLYGON_SIDES = 16
#: the least cost of moving a DER, so a free DER is never moved for nothing
MIN_COST_PER_KWH = 1e-3

P_ROLES = (Quantity.ACTIVE_POWER_SETPOINT, Quantity.ACTIVE_POWER_LIMIT)


@dataclass(frozen=True)
class DerState:
    """Live readings of one DER (None where no good reading exists)."""

    p_kw: float | None = None
    q_kvar: float | None = None
    soc_pct: float | None = None
    available_kw: float | None = None
    #: current value of its active_power_limit point (PV ceiling or load curtailment), percent
    limit_pct: float | None = None
    online: bool = True

    @classmethod
    def read(cls, der_id: str, points: PointValues) -> DerState:
        status = points.value(der_id, Quantity.STATUS)
        return cls(
            p_kw=points.value(der_id, Quantity.ACTIVE_POWER),
            q_kvar=points.value(der_id, Quantity.REACTIVE_POWER),
            soc_pct=points.value(der_id, Quantity.STATE_OF_CHARGE),
            available_kw=points.value(der_id, Quantity.AVAILABLE_POWER),
            limit_pct=points.value(der_id, Quantity.ACTIVE_POWER_LIMIT),
            online=status is None or status >= 0.5,
        )


@dataclass(frozen=True)
class Storage:
    """Energy window of a battery; energies in kWh stored, efficiencies per direction."""

    e0_kwh: float
    e_min_kwh: float
    e_max_kwh: float
    eta_charge: float
    eta_discharge: float

    def max_discharge_kw(self, e_kwh: float, hours: float) -> float:
        """The discharge power the stored energy sustains for `hours`."""
        return max(e_kwh - self.e_min_kwh, 0.0) * self.eta_discharge / hours

    def max_charge_kw(self, e_kwh: float, hours: float) -> float:
        return max(self.e_max_kwh - e_kwh, 0.0) / self.eta_charge / hours


@dataclass(frozen=True)
class EnergyNeed:
    """An EV must absorb `energy_kwh` in intervals first..last (inclusive) of a horizon."""

    first: int
    last: int
    energy_kwh: float


@dataclass(frozen=True)
class Facet:
    """a*P + b*Q <= c."""

    a: float
    b: float
    c: float


@dataclass(frozen=True)
class DerCapability:
    """The static capability of one DER: config plus which control roles its points have."""

    der: Der
    p_controllable: bool
    q_controllable: bool
    #: most a controllable load may be curtailed, percent of its demand
    curtail_max_pct: float = 0.0

    @classmethod
    def of(cls, der: Der, points: PointValues) -> DerCapability:
        has = {q for q in Quantity if points.find(der.id, q)}
        p_ctl = any(role in has for role in P_ROLES)
        curtail = 0.0
        if der.type in (DerType.LOAD,) and Quantity.ACTIVE_POWER_LIMIT in has:
            point = points.find(der.id, Quantity.ACTIVE_POWER_LIMIT)[0].point
            limit_max = point.limits.max if point.limits and point.limits.max is not None else 100
            share = der.ratings.curtailable_pct
            curtail = min(limit_max, 100.0 if share is None else share)
        if der.type is DerType.LOAD and curtail <= 0:
            p_ctl = False
        return cls(der, p_ctl, Quantity.REACTIVE_POWER_SETPOINT in has, curtail)

    @property
    def id(self) -> str:
        return self.der.id

    @property
    def type(self) -> DerType:
        return self.der.type

    @property
    def distributed(self) -> bool:
        return self.der.control is ControlManner.DISTRIBUTED

    @property
    def cost_per_kwh(self) -> float:
        return max(self.der.ratings.cost_per_kwh, MIN_COST_PER_KWH)

    def storage(self, state: DerState) -> Storage | None:
        r = self.der.ratings
        if self.type is not DerType.BATTERY or r.energy_kwh is None:
            return None
        soc = 50.0 if state.soc_pct is None else state.soc_pct
        cap = r.energy_kwh
        e_min, e_max = cap * r.soc_min_pct / 100, cap * r.soc_max_pct / 100
        return Storage(
            e0_kwh=min(max(cap * soc / 100, 0.0), cap),
            e_min_kwh=e_min,
            e_max_kwh=e_max,
            eta_charge=r.efficiency_charge,
            eta_discharge=r.efficiency_discharge,
        )

    # -- active power -------------------------------------------------------------------

    def natural_now(self, state: DerState) -> float:
        """What the DER would produce now if the MGMS released it (kW, injection)."""
        p = state.p_kw or 0.0
        if not state.online:
            return 0.0
        if self.type is DerType.BATTERY:
            return 0.0
        if self.type is DerType.PV:
            if state.available_kw is not None:
                return max(state.available_kw, p)
            return p
        if self.type is DerType.LOAD:
            curtailed = min(max(state.limit_pct or 0.0, 0.0), 99.0)
            return p / (1 - curtailed / 100)
        return p

    def p_range(self, natural_kw: float, online: bool = True) -> tuple[float, float]:
        """The P range reachable around a natural value (kW)."""
        r = self.der.ratings
        if not online:
            return 0.0, 0.0
        if not self.p_controllable:
            return natural_kw, natural_kw
        if self.type is DerType.BATTERY:
            return r.p_min_kw, r.p_max_kw
        if self.type is DerType.PV:
            n = max(natural_kw, 0.0)
            return 0.0, n
        if self.type is DerType.LOAD:
            n = min(natural_kw, 0.0)
            return n, n * (1 - self.curtail_max_pct / 100)
        if self.type is DerType.GENERATOR:
            running = natural_kw > 1e-6
            floor = max(r.min_stable_kw or 0.0, r.p_min_kw, 0.0)
            if not running and (r.min_stable_kw or 0.0) > 0:
                return 0.0, 0.0  # starting it is a unit-commitment decision, not this LP's
            return (floor if running else 0.0), r.p_max_kw
        # EV charger: somewhere between its fastest charge and its slowest
        return r.p_min_kw, min(r.p_max_kw, 0.0)

    # -- reactive power -----------------------------------------------------------------

    def _pf_slope(self) -> float | None:
        pf = self.der.ratings.power_factor_min
        return None if pf is None else math.tan(math.acos(pf))

    def _q_window(self, p_circle: float, p_cone: float) -> tuple[float, float]:
        """Q range with the circle taken at |P| = p_circle and the cone at |P| = p_cone."""
        if not self.q_controllable:
            return 0.0, 0.0
        r = self.der.ratings
        lim = math.inf
        if r.s_max_kva is not None:
            lim = math.sqrt(max(r.s_max_kva**2 - p_circle**2, 0.0))
        slope = self._pf_slope()
        if slope is not None:
            lim = min(lim, slope * p_cone)
        lo = -lim if r.q_min_kvar is None else max(-lim, r.q_min_kvar)
        hi = lim if r.q_max_kvar is None else min(lim, r.q_max_kvar)
        if math.isinf(lo) or math.isinf(hi) or lo > hi:
            return 0.0, 0.0  # no reactive rating given (or an empty one): promise nothing
        return min(lo, 0.0), max(hi, 0.0)

    def q_range(self, p_kw: float) -> tuple[float, float]:
        """Exact reactive range at active power p_kw."""
        return self._q_window(abs(p_kw), abs(p_kw))

    def q_range_over(self, p_lo: float, p_hi: float) -> tuple[float, float]:
        """The reactive range available at *every* P in [p_lo, p_hi] (for reservations): the
        circle is tightest at the largest |P|, the cone at the smallest."""
        p_circle = max(abs(p_lo), abs(p_hi))
        p_cone = 0.0 if p_lo <= 0 <= p_hi else min(abs(p_lo), abs(p_hi))
        return self._q_window(p_circle, p_cone)

    def facets(self, p_lo: float, p_hi: float) -> list[Facet]:
        """Linear constraints on (P, Q) valid for P in [p_lo, p_hi]; empty when Q is free of
        P (only fixed bounds) or not controllable."""
        if not self.q_controllable:
            return []
        r = self.der.ratings
        out: list[Facet] = []
        if r.s_max_kva is not None:
            c = r.s_max_kva * math.cos(math.pi / POLYGON_SIDES)
            for k in range(POLYGON_SIDES):
                theta = 2 * math.pi * (k + 0.5) / POLYGON_SIDES
                out.append(Facet(math.cos(theta), math.sin(theta), c))
        slope = self._pf_slope()
        if slope is not None:
            if p_lo >= 0:  # Q <= slope*P and -Q <= slope*P
                out += [Facet(-slope, 1.0, 0.0), Facet(-slope, -1.0, 0.0)]
            elif p_hi <= 0:
                out += [Facet(slope, 1.0, 0.0), Facet(slope, -1.0, 0.0)]
            else:  # the cone is not convex across P = 0: hold Q at zero
                out += [Facet(0.0, 1.0, 0.0), Facet(0.0, -1.0, 0.0)]
        return out

    def q_bounds(self) -> tuple[float, float]:
        """Fixed Q bounds for an LP column (the facets add the P-dependent part): the
        widest range any P allows, by the same rules as `q_range`."""
        r = self.der.ratings
        p_abs = max(abs(r.p_min_kw), abs(r.p_max_kw))
        return self._q_window(0.0, p_abs)

    # -- over a horizon -----------------------------------------------------------------

    def ev_sessions(
        self, horizon: Horizon, now: datetime, delivered_kwh: float = 0.0
    ) -> tuple[NDArray[np.bool_], list[EnergyNeed]]:
        """Plugged-in mask per interval and the energy each session in the horizon still
        needs before its departure. `delivered_kwh` is what the running session (arrived
        before `now`) already received."""
        plugged: NDArray[np.bool_] = np.zeros(horizon.count, dtype=bool)
        session = self.der.ev
        needs: list[EnergyNeed] = []
        if session is None:
            return plugged, needs
        day = horizon.start.replace(hour=0, minute=0, second=0, microsecond=0)
        days = horizon.count * horizon.step // timedelta(days=1) + 2
        for d in range(-1, days):
            base = day + timedelta(days=d)
            arrive = base.replace(hour=session.arrival.hour, minute=session.arrival.minute)
            leave = base.replace(hour=session.departure.hour, minute=session.departure.minute)
            if leave <= arrive:
                leave += timedelta(days=1)
            idx = [i for i in range(horizon.count) if arrive <= horizon.start_of(i) < leave]
            if not idx:
                continue
            plugged[idx] = True
            remaining = session.energy_kwh - (delivered_kwh if arrive <= now else 0.0)
            if remaining > 1e-6:
                needs.append(EnergyNeed(idx[0], idx[-1], remaining))
        return plugged, needs

    def ev_natural(self, count: int, needs: list[EnergyNeed], step_h: float) -> Floats:
        """Uncontrolled charging: full rate from arrival until each need is met."""
        out = np.zeros(count)
        rate = -self.der.ratings.p_min_kw
        for need in needs:
            left = need.energy_kwh
            for i in range(need.first, need.last + 1):
                if left <= 1e-9 or rate <= 0:
                    break
                take = min(rate, left / step_h)
                out[i] = -take
                left -= take * step_h
        return out


def q_polygon_error() -> float:
    """Largest relative shortfall of the inscribed polygon against the S circle."""
    return 1 - math.cos(math.pi / POLYGON_SIDES)
