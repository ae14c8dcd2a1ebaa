"""Builds the inputs of the plan and dispatch LPs from the config, the point table and the
stored history: the glue between live data and the pure flexibility functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from gateway.config import DerType, FlexSettings, LoadedConfig
from gateway.flex import baseline
from gateway.flex.baseline import ForecastMethod, History, Sample, pairs
from gateway.flex.capability import DerCapability, DerState, EnergyNeed, Storage
from gateway.flex.dispatch import DerNow, Headroom
from gateway.flex.intervals import Horizon
from gateway.flex.model import Reservation
from gateway.flex.ports import PointValues
from gateway.flex.schedule import DerPlanInput, GridLimits, HeldReserve, PlanInput, PlanResult
from gateway.mapping import Quantity

Floats = NDArray[np.float64]


def method_of(settings: FlexSettings) -> ForecastMethod:
    return ForecastMethod(
        days=settings.history_days,
        day_decay=settings.day_weight_decay,
        tau=timedelta(minutes=settings.persistence_tau_min),
        external_weight=settings.external_weight,
    )


@dataclass
class FlexModel:
    """The microgrid as the flexibility functions see it (built once at start)."""

    microgrid: str
    pcc: str
    #: the device whose counters settle the coupling point (None: the first mapped)
    billing_meter: str | None
    caps: dict[str, DerCapability]
    grid: GridLimits
    settings: FlexSettings

    @classmethod
    def build(cls, config: LoadedConfig, points: PointValues) -> FlexModel:
        gw = config.gateway
        return cls(
            microgrid=gw.microgrid.id,
            pcc=gw.coupling_point.id,
            billing_meter=gw.coupling_point.billing_meter,
            caps={d.id: DerCapability.of(d, points) for d in gw.ders},
            grid=GridLimits.of(gw.coupling_point, gw.internal_limits),
            settings=gw.flex,
        )

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=self.settings.interval_s)

    def horizon(self, now: datetime, until: datetime | None = None) -> Horizon:
        length = timedelta(hours=self.settings.horizon_h)
        if until is not None:
            length = max(length, until - now)
        return Horizon.covering(now, self.step, length)

    def states(self, points: PointValues) -> dict[str, DerState]:
        return {i: DerState.read(i, points) for i in self.caps}

    def reserves(self, horizon: Horizon) -> tuple[HeldReserve, ...]:
        out = []
        for r in self.settings.reserves:
            active = np.array(
                [
                    (r.start is None or horizon.end_of(i) > r.start)
                    and (r.end is None or horizon.start_of(i) < r.end)
                    for i in range(horizon.count)
                ],
                dtype=bool,
            )
            out.append(
                HeldReserve(
                    r.id, r.service, tuple(r.ders), r.up_kw, r.down_kw, r.sustain_min / 60, active
                )
            )
        return tuple(out)


class InputBuilder:
    def __init__(self, model: FlexModel, points: PointValues, history: History | None) -> None:
        self.model = model
        self.points = points
        self.history = history
        self.method = method_of(model.settings)

    def _point(self, der: str, quantity: Quantity) -> str | None:
        found = self.points.find(der, quantity)
        return found[0].point.id if found else None

    async def _samples(self, point: str | None, start: datetime, end: datetime) -> list[Sample]:
        if point is None or self.history is None:
            return []
        return pairs(await self.history.range(point, start, end))

    async def _forecast(
        self,
        point: str | None,
        horizon: Horizon,
        now: datetime,
        fallback: float,
        external: Sequence[float | None] | None,
    ) -> Floats:
        start = horizon.start - timedelta(days=self.method.days)
        samples = await self._samples(point, start, now)
        values = baseline.forecast(samples, horizon, now, self.method, external)
        return np.where(np.isfinite(values), values, fallback)

    async def natural(
        self,
        cap: DerCapability,
        state: DerState,
        horizon: Horizon,
        now: datetime,
        external: Sequence[float | None] | None = None,
    ) -> Floats:
        """The DER's natural P per interval (kW, injection)."""
        now_value = cap.natural_now(state)
        der = cap.der
        if der.type is DerType.BATTERY:
            return np.zeros(horizon.count)
        if der.type is DerType.GENERATOR:
            return np.full(horizon.count, now_value)
        if der.type is DerType.EV_CHARGER:
            _, needs = cap.ev_sessions(horizon, now, await self._ev_delivered(cap, now))
            return cap.ev_natural(horizon.count, needs, horizon.step_h)
        if der.type is DerType.PV:
            point = self._point(der.id, Quantity.AVAILABLE_POWER) or self._point(
                der.id, Quantity.ACTIVE_POWER
            )
            values = await self._forecast(point, horizon, now, now_value, external)
            return np.clip(values, 0.0, max(der.ratings.p_max_kw, 0.0))
        point = self._point(der.id, Quantity.ACTIVE_POWER)
        values = await self._forecast(point, horizon, now, now_value, external)
        return np.clip(values, min(der.ratings.p_min_kw, 0.0), 0.0)

    async def _ev_delivered(self, cap: DerCapability, now: datetime) -> float:
        """Energy the running EV session received so far (from the stored P)."""
        session = cap.der.ev
        if session is None:
            return 0.0
        arrive = now.replace(
            hour=session.arrival.hour, minute=session.arrival.minute, second=0, microsecond=0
        )
        if arrive > now:
            arrive -= timedelta(days=1)
        samples = await self._samples(self._point(cap.id, Quantity.ACTIVE_POWER), arrive, now)
        if len(samples) < 2:
            return 0.0
        t = np.array([(s[0] - arrive).total_seconds() for s in samples])
        v = np.array([s[1] for s in samples])
        return float(-np.sum(v[:-1] * np.diff(t)) / 3600)

    async def other(self, horizon: Horizon, now: datetime, states: dict[str, DerState]) -> Floats:
        """Coupling-point P that no DER explains (pcc + sum of DER P), forecast per interval."""
        pcc_point = self._point(self.model.pcc, Quantity.ACTIVE_POWER)
        pcc_now = self.points.value(self.model.pcc, Quantity.ACTIVE_POWER)
        if pcc_point is None or pcc_now is None:
            return np.zeros(horizon.count)
        now_value = pcc_now + sum(s.p_kw or 0.0 for s in states.values())
        days = self.method.days
        past = Horizon(
            horizon.start - timedelta(days=days),
            horizon.step,
            days * (timedelta(days=1) // horizon.step) + 1,
        )
        means = baseline.interval_means(await self._samples(pcc_point, past.start, now), past)
        for der in self.model.caps:
            point = self._point(der, Quantity.ACTIVE_POWER)
            if point is None:
                continue
            der_means = baseline.interval_means(await self._samples(point, past.start, now), past)
            means = means + np.where(np.isfinite(der_means), der_means, 0.0)
        pseudo: list[Sample] = [
            (past.start_of(i) + horizon.step / 2, float(means[i]))
            for i in range(past.count)
            if np.isfinite(means[i]) and past.start_of(i) + horizon.step / 2 < now
        ]
        pseudo.append((now, now_value))
        values = baseline.forecast(pseudo, horizon, now, self.method)
        return np.where(np.isfinite(values), values, now_value)

    async def plan_input(
        self,
        now: datetime,
        horizon: Horizon,
        reservations: Sequence[Reservation],
        external: Mapping[str, Sequence[float | None]] | None = None,
    ) -> PlanInput:
        states = self.model.states(self.points)
        ders = []
        for der_id, cap in self.model.caps.items():
            state = states[der_id]
            nat = await self.natural(cap, state, horizon, now, (external or {}).get(der_id))
            lo, hi = np.empty(horizon.count), np.empty(horizon.count)
            for t in range(horizon.count):
                lo[t], hi[t] = cap.p_range(float(nat[t]), state.online)
            needs: tuple[EnergyNeed, ...] = ()
            if cap.type is DerType.EV_CHARGER:
                delivered = await self._ev_delivered(cap, now)
                plugged, need_list = cap.ev_sessions(horizon, now, delivered)
                lo = np.where(plugged, lo, 0.0)
                hi = np.where(plugged, hi, 0.0)
                needs = tuple(need_list)
            ramp = cap.der.ratings.ramp_kw_per_s
            ders.append(
                DerPlanInput(
                    cap=cap,
                    p_lo=lo,
                    p_hi=hi,
                    p_nat=nat,
                    storage=cap.storage(state),
                    needs=needs,
                    ramp_kw=None if ramp is None else ramp * horizon.step.total_seconds(),
                    q_base=state.q_kvar or 0.0,
                )
            )
        pcc_q = self.points.value(self.model.pcc, Quantity.REACTIVE_POWER)
        other_q = None
        if pcc_q is not None:
            other_q = np.full(horizon.count, pcc_q + sum(s.q_kvar or 0.0 for s in states.values()))
        return PlanInput(
            horizon=horizon,
            ders=tuple(ders),
            other_p=await self.other(horizon, now, states),
            grid=self.model.grid,
            reserves=self.model.reserves(horizon),
            reservations=tuple(reservations),
            other_q=other_q,
            energy_margin=self.model.settings.energy_margin_pct / 100,
        )

    def snapshot(
        self,
        now: datetime,
        plan: PlanResult | None,
        until: datetime,
        held: set[str],
        keep_bands: Sequence[tuple[str, str, float, float]] = (),
    ) -> tuple[dict[str, DerState], list[DerNow], tuple[Headroom, ...]]:
        """DER states and their reach now; `until` is how long storage must sustain it."""
        states = self.model.states(self.points)
        index = None if plan is None else plan.horizon.index(now)
        out = []
        for der_id, cap in self.model.caps.items():
            state = states[der_id]
            natural = cap.natural_now(state)
            lo, hi = cap.p_range(natural, state.online)
            storage = cap.storage(state)
            prefer: tuple[float | None, float | None] = (None, None)
            if storage is not None:
                # what the standing reserves keep is a hard floor; over how long it must
                # last: the current interval under a plan, else the activation
                last = until if plan is None or index is None else plan.horizon.end_of(index)
                lo, hi = self._energy_reach(der_id, storage, None, None, now, last, lo, hi)
                if plan is not None and index is not None:
                    prefer = self._energy_reach(der_id, storage, plan, index, now, until, lo, hi)
            if cap.type is DerType.EV_CHARGER and cap.der.ev is not None:
                single = Horizon.covering(now, self.model.step, self.model.step)
                plugged, _ = cap.ev_sessions(single, now)
                if not plugged[0]:
                    lo = hi = 0.0
            base = natural
            if plan is not None and index is not None and der_id in plan.p:
                base = float(plan.p[der_id][index])
            p_meas = state.p_kw if state.p_kw is not None else natural
            out.append(
                DerNow(
                    cap=cap,
                    p_kw=p_meas,
                    q_kvar=state.q_kvar or 0.0,
                    p_lo=min(lo, hi),
                    p_hi=max(lo, hi),
                    p_base=base,
                    q_base=0.0,
                    held=der_id in held,
                    keep_lo=prefer[0],
                    keep_hi=prefer[1],
                )
            )
        keep = [
            Headroom(r.id, r.service, tuple(r.ders), r.up_kw, r.down_kw)
            for r in self.model.settings.reserves
            if (r.start is None or r.start <= now) and (r.end is None or now < r.end)
        ]
        all_ders = tuple(self.model.caps)
        keep += [
            Headroom(rid, service, all_ders, up, down) for rid, service, up, down in keep_bands
        ]
        return states, out, tuple(keep)

    def _energy_reach(
        self,
        der_id: str,
        st: Storage,
        plan: PlanResult | None,
        index: int | None,
        now: datetime,
        until: datetime,
        lo: float,
        hi: float,
    ) -> tuple[float, float]:
        """With a plan: the range that leaves the plan's energy floor (ceiling) in store at
        the end of the current interval, so the reserved bands ahead stay covered. Without:
        the range whose energy lasts until `until` above what standing reserves keep."""
        if plan is not None and index is not None and der_id in plan.energy_floor:
            left_h = (plan.horizon.end_of(index) - now).total_seconds() / 3600
            hours = max(left_h, self.model.settings.control_cycle_s / 3600)
            floor = float(plan.energy_floor[der_id][index + 1])
            ceiling = float(plan.energy_ceiling[der_id][index + 1])
        else:
            up_e, down_e = self._reserve_energy().get(der_id, (0.0, 0.0))
            floor, ceiling = st.e_min_kwh + up_e, st.e_max_kwh - down_e
            hours = max(
                (until - now).total_seconds() / 3600, self.model.settings.control_cycle_s / 3600
            )
        hi = min(hi, max(st.e0_kwh - floor, 0.0) * st.eta_discharge / hours)
        lo = max(lo, -max(ceiling - st.e0_kwh, 0.0) / st.eta_charge / hours)
        return lo, hi

    def _reserve_energy(self) -> dict[str, tuple[float, float]]:
        """Stored energy each battery keeps for the standing reserves: (above floor, below
        ceiling) in kWh, shared by capacity within each reserve."""
        out: dict[str, tuple[float, float]] = {}
        for r in self.model.settings.reserves:
            stores = [
                self.model.caps[d] for d in r.ders if self.model.caps[d].type is DerType.BATTERY
            ]
            total = sum(c.der.ratings.energy_kwh or 0.0 for c in stores)
            for c in stores:
                share = (c.der.ratings.energy_kwh or 0.0) / total if total else 0.0
                rt = c.der.ratings
                up = share * r.up_kw * r.sustain_min / 60 / rt.efficiency_discharge
                down = share * r.down_kw * r.sustain_min / 60 * rt.efficiency_charge
                prev = out.get(c.id, (0.0, 0.0))
                out[c.id] = (prev[0] + up, prev[1] + down)
        return out
