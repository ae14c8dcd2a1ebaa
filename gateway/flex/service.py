"""The flexibility service: the CRP use case end to end inside the gateway.

The composition root builds one `FlexService` and
- runs `run()` in its task group (control cycles, plan execution, periodic forecasts and
  verifications);
- lets the northbound pipeline call `notify(reservation)` and `activate(activation)`
  (they check, decide, record and return the decision for the response) and
  `forecast()` when the AMS asks for a Flexibility Forecast.
Messages for the AMS (forecasts and verifications) go to the `FlexPublisher` (the
northbound outbox). `external`, if given, returns per DER an external forecast of its P on
the horizon asked for (gateway.flex.messages.ExternalForecasts holds Smart API series).

LP solves run in a worker thread; the point table is read on the event loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from gateway.config import DerType, LoadedConfig
from gateway.flex import flexibility
from gateway.flex.baseline import History, Sample, pairs
from gateway.flex.conflict import (
    TOLERANCE_KW,
    NotificationCheck,
    check_activation,
    check_notification,
    clamp_setpoint,
    envelope,
    find_reservation,
)
from gateway.flex.control import Controller, Planned, SetpointWriter, Target
from gateway.flex.dispatch import Dispatch, DispatchInput, dispatch
from gateway.flex.inputs import FlexModel, InputBuilder
from gateway.flex.intervals import Horizon
from gateway.flex.model import (
    Activation,
    ActivationDecision,
    DecisionStatus,
    FlexForecast,
    NotificationDecision,
    Reason,
    ReasonCode,
    Reservation,
    Verification,
)
from gateway.flex.records import UNKNOWN, FlexRecords
from gateway.flex.schedule import PlanInput, PlanResult, schedule
from gateway.flex.verify import Baseline, Measurements, Setpoint, verify
from gateway.mapping import Quantity
from gateway.points import PointTable

log = logging.getLogger(__name__)

#: how long after an interval (or activation) ends its verification waits, so that the
#: store holds the meter's readings beyond the end (counters are interpolated there)
VERIFY_DELAY = timedelta(seconds=3)
#: how long the first decision after a start waits for the first readings
READINGS_WAIT_S = 15.0


class Clock(Protocol):
    """Time of the service; simulated time in tests and the demo."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FlexPublisher(Protocol):
    """Where messages for the AMS go (the northbound outbox)."""

    async def forecast(self, message: FlexForecast) -> None: ...

    async def verification(self, message: Verification) -> None: ...


class FlexObserver(Protocol):
    """Who watches the service (metrics, the status page): told as things happen, on the
    event loop thread; must be quick and must not fail."""

    def decided(self, act: Activation, decision: ActivationDecision) -> None: ...

    def in_force(self, act: Activation, seconds: float) -> None:
        """The first set points of `act` were written, `seconds` after it was due."""

    def cycled(
        self,
        act: Activation,
        at: datetime,
        setpoint_kw: float | None,
        baseline_kw: float | None,
        measured_kw: float | None,
    ) -> None: ...

    def verified(self, verification: Verification) -> None: ...

    def ended(self, act: Activation, at: datetime, summary: str) -> None: ...


class Unobserved:
    """The default FlexObserver: nobody watches."""

    def decided(self, act: Activation, decision: ActivationDecision) -> None:
        pass

    def in_force(self, act: Activation, seconds: float) -> None:
        pass

    def cycled(
        self,
        act: Activation,
        at: datetime,
        setpoint_kw: float | None,
        baseline_kw: float | None,
        measured_kw: float | None,
    ) -> None:
        pass

    def verified(self, verification: Verification) -> None:
        pass

    def ended(self, act: Activation, at: datetime, summary: str) -> None:
        pass


@dataclass
class Running:
    """The activation in force."""

    activation: Activation
    reservation: Reservation | None
    baseline: Baseline
    decision: ActivationDecision
    #: event-loop time at which its set points were due (decided, or its start if later);
    #: None once they were written (or for one resumed after a restart)
    due: float | None = None
    setpoints: list[Setpoint] = field(default_factory=list)
    #: distributed DERs that received their target (supervised from then on)
    targeted: dict[str, float] = field(default_factory=dict)
    verified_until: datetime | None = None
    cycles: int = 0
    supervised_notes: set[str] = field(default_factory=set)
    last: Dispatch | None = None
    notes: list[str] = field(default_factory=list)


def _fits(asked: Reservation, held: Reservation) -> str:
    """How much of a reservation would fit, as the smallest share of its bands."""
    shares = []
    for want, got in zip(asked.bands, held.bands, strict=True):
        for a, b in (
            (want.p_up_kw, got.p_up_kw),
            (want.p_down_kw, got.p_down_kw),
            (want.q_up_kvar, got.q_up_kvar),
            (want.q_down_kvar, got.q_down_kvar),
        ):
            if a > 0:
                shares.append(b / a)
    share = min(shares, default=0.0)
    return f"at most {100 * share:.0f} % of the reserved bands fit; nothing was held"


def baseline_to_json(b: Baseline) -> dict[str, Any]:
    return {
        "start": b.horizon.start.isoformat(),
        "step_s": b.horizon.step.total_seconds(),
        "p": list(b.p_kw),
        "q": list(b.q_kvar),
    }


def baseline_from_json(raw: dict[str, Any]) -> Baseline:
    h = Horizon(
        datetime.fromisoformat(raw["start"]), timedelta(seconds=raw["step_s"]), len(raw["p"])
    )
    return Baseline(h, tuple(raw["p"]), tuple(raw["q"]))


class FlexService:
    def __init__(
        self,
        config: LoadedConfig,
        points: PointTable,
        controller: Controller,
        records: FlexRecords,
        publisher: FlexPublisher,
        history: History | None = None,
        clock: Clock | None = None,
        external: Callable[[Horizon], Mapping[str, Sequence[float | None]]] | None = None,
    ) -> None:
        self.model = FlexModel.build(config, points)
        self.points = points
        self.inputs = InputBuilder(self.model, points, history)
        self.history = history
        self.records = records
        self.publisher = publisher
        self.clock = clock or WallClock()
        self._controller = controller
        self.writer = SetpointWriter(controller, points, self.model.settings.setpoint_deadband_kw)
        self.external = external
        self.reservations: list[Reservation] = []
        self.plan: PlanResult | None = None
        self.running: Running | None = None
        self._lock = asyncio.Lock()
        #: DERs the plan currently moves away from their natural output
        self._steered: set[str] = set()
        #: ended activations waiting for their final verification (and when they ended)
        self._closing: list[tuple[Running, datetime]] = []
        self._plan_at: datetime | None = None
        self._last_forecast: datetime | None = None
        self._started = False
        #: metrics and the status page; set by the composition root
        self.observer: FlexObserver = Unobserved()

    # -- business API for the northbound pipeline ------------------------------------------

    async def forecast(self) -> FlexForecast:
        """A fresh Flexibility Forecast (also published)."""
        await self.start()
        async with self._lock:
            now = self.clock.now()
            inp, plan = await self._replan(now)
            ff = await asyncio.to_thread(flexibility.forecast, self.model.microgrid, inp, plan, now)
            self._last_forecast = now
        await self.publisher.forecast(ff)
        return ff

    def reservation(self, reservation_id: str) -> Reservation | None:
        """An accepted reservation still held."""
        return next((r for r in self.reservations if r.id == reservation_id), None)

    async def notify(self, reservation: Reservation, partial: bool = True) -> NotificationDecision:
        """Check a Reserve Notification, hold what fits, record the decision. With
        `partial` off, a reservation that does not fit whole is refused (nothing held) and
        the reasons say how much would fit."""
        await self.start()
        async with self._lock:
            now = self.clock.now()
            known = await asyncio.to_thread(self.records.reservation_status, reservation.id)
            if known is not None:  # a repeated delivery gets the same answer
                status, accepted, reasons = known
                return NotificationDecision(
                    reservation.id, DecisionStatus(status), accepted, reasons
                )
            others = [r for r in self.reservations if r.end > now]
            horizon = self.model.horizon(now, reservation.end)
            inp = await self.inputs.plan_input(now, horizon, others, self._external(horizon))
            check: NotificationCheck = await asyncio.to_thread(
                check_notification, inp, reservation, now
            )
            decision = check.decision
            if not partial and decision.status is DecisionStatus.CURTAILED:
                assert decision.accepted is not None
                fits = _fits(reservation, decision.accepted)
                fits_reason = Reason(ReasonCode.BAND, reservation.id, fits)
                decision = NotificationDecision(
                    reservation.id, DecisionStatus.REFUSED, None, (*decision.reasons, fits_reason)
                )
            await asyncio.to_thread(
                self.records.save_reservation,
                now,
                reservation,
                decision.status.value,
                decision.accepted,
                decision.reasons,
            )
            if decision.accepted is not None and check.plan is not None:
                self.reservations = [*others, decision.accepted]
                self.plan = check.plan
                self._plan_at = now
            log.info(
                "reservation %s %s %s",
                reservation.id,
                decision.status.value,
                "; ".join(map(str, decision.reasons)),
            )
        if decision.accepted is not None:
            await self.forecast()  # the flexibility left changed
        return decision

    async def activate(self, act: Activation) -> ActivationDecision:
        """Check a Reserve Activation and put it in force (or refuse it), recorded."""
        received = asyncio.get_running_loop().time()  # its latency counts the checks too
        await self.start()
        async with self._lock:
            now = self.clock.now()
            known = await asyncio.to_thread(self.records.activation, act.id)
            if known is not None:
                return ActivationDecision(
                    act.id, DecisionStatus(known.status), known.p_kw, known.q_kvar, known.reasons
                )
            reservation = find_reservation(act, self.reservations)
            plan = self.plan
            if plan is None or plan.horizon.index(max(now, act.start)) is None:
                _, plan = await self._replan(now)
            at = max(now, act.start)
            i = plan.horizon.index(at)
            env = None
            if reservation is not None and i is not None:
                env = envelope(
                    reservation, plan.pcc_p, plan.horizon, i, self.model.grid, self._q_base()
                )
            trial = None
            if env is not None or self.model.settings.allow_unreserved_activation:
                p, q = act.p_kw, act.q_kvar
                if env is not None:
                    p, q, _, _ = clamp_setpoint(act, env)
                trial = await self._dispatch(now, plan, act, reservation, p, q, held=set())
            running = self.running.activation if self.running is not None else None
            decision = check_activation(
                act,
                now,
                reservation,
                running,
                env,
                trial,
                self.model.settings.allow_unreserved_activation,
            )
            base = None
            if decision.status is not DecisionStatus.REFUSED:
                base = self._baseline(plan, act)
                if self.running is not None:  # superseded by a newer one of the same reservation
                    # one that starts now is dispatched at once below: the DERs go straight
                    # to its set points, not through the plan's and back
                    await self._end(
                        now, "superseded by activation " + act.id, release=act.start > now
                    )
                lead = max((act.start - now).total_seconds(), 0.0)
                self.running = Running(act, reservation, base, decision, received + lead)
            await asyncio.to_thread(
                self.records.save_activation,
                now,
                act,
                decision.status.value,
                decision.p_kw,
                decision.q_kvar,
                decision.reasons,
                None if base is None else baseline_to_json(base),
                "active" if base is not None else "refused",
            )
            log.info(
                "activation %s %s %s",
                act.id,
                decision.status.value,
                "; ".join(map(str, decision.reasons)),
            )
            self.observer.decided(act, decision)
            if (
                self.running is not None
                and self.running.activation.id == act.id
                and act.start <= now
            ):
                await self._cycle(now)
        return decision

    # -- reload ------------------------------------------------------------------------------

    async def prepare_reload(self, config: LoadedConfig) -> Callable[[], Awaitable[None]]:
        """The model of a reloaded config (DERs, coupling point and internal limits, flex
        settings), built against its mapping; the commit swaps it in between two cycles."""
        model = FlexModel.build(config, PointTable(config))

        async def commit() -> None:
            async with self._lock:
                self.model = model
                self.inputs = InputBuilder(model, self.points, self.history)
                # the next cycle writes every target again, against the new ratings
                self.writer = SetpointWriter(
                    self._controller, self.points, model.settings.setpoint_deadband_kw
                )
                self.plan, self._plan_at = None, None  # replanned on the new limits
                self._steered &= set(model.caps)
                if self.running is not None:
                    gone = set(self.running.targeted) - set(model.caps)
                    for der in gone:
                        del self.running.targeted[der]
            log.info(
                "flex: reloaded (%d DERs, import <= %g kW, export <= %g kW)",
                len(model.caps),
                model.grid.import_kw,
                model.grid.export_kw,
            )

        return commit

    # -- the loop ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what the records hold: accepted reservations, interrupted activations. Once;
        `notify`, `activate` and `forecast` call it first, so a message that arrives just
        after a restart (the AMS repeating what it saw no answer to) is decided on what
        the records hold, not on an empty book."""
        async with self._lock:
            if self._started:
                return
            self._started = True
            await self._load()
            await self._await_readings()
            await self._settle_interrupted_writes()

    async def _settle_interrupted_writes(self) -> None:
        """Writes recorded as `sending` were cut by a kill: the device may hold the new
        value or the old one. Say so, mark them `unknown` and write those DERs again: an
        activation in force rewrites every DER at its next cycle (the writer remembers
        nothing after a start); otherwise they go back to their plan."""
        cut = await asyncio.to_thread(self.records.unsettled_setpoints)
        if not cut:
            return
        detail = "the gateway stopped while writing it; written again after the restart"
        for _, origin, der, point, value in cut:
            log.warning(
                "%s: write of %s = %g interrupted (%s): %s", origin, point, value, der, detail
            )
        await asyncio.to_thread(
            self.records.settle_setpoints, [(seq, UNKNOWN, detail) for seq, *_ in cut]
        )
        self._steered |= {der for _, _, der, _, _ in cut if der in self.model.caps}

    async def _await_readings(self) -> None:
        """After a (re)start the point table is empty until the first polls: wait (bounded)
        for the active power of the coupling point and of every DER, so that no plan,
        baseline or decision is made from nothing."""
        needed = [
            der
            for der in (self.model.pcc, *self.model.caps)
            if self.points.find(der, Quantity.ACTIVE_POWER)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READINGS_WAIT_S
        while True:
            missing = [d for d in needed if self.points.value(d, Quantity.ACTIVE_POWER) is None]
            if not missing or loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
        if missing:
            log.warning(
                "no active power reading of %s after %.0f s: deciding without it",
                ", ".join(missing),
                READINGS_WAIT_S,
            )

    async def _load(self) -> None:
        now = self.clock.now()
        self.reservations = await asyncio.to_thread(self.records.accepted_reservations, now)
        for rec in await asyncio.to_thread(self.records.open_activations):
            act = rec.activation
            base = baseline_from_json(rec.baseline) if rec.baseline else None
            if base is None:
                continue
            reservation = find_reservation(act, self.reservations)
            decision = ActivationDecision(
                act.id, DecisionStatus(rec.status), rec.p_kw, rec.q_kvar, rec.reasons
            )
            running = Running(act, reservation, base, decision)
            running.setpoints = [
                Setpoint(t, p, q)
                for t, p, q in await asyncio.to_thread(self.records.pcc_setpoints, act.id)
            ]
            if not running.setpoints and rec.p_kw is not None:
                # killed before its first control cycle: what was decided is what was asked
                # from its start, so the verification does not take the baseline for it
                running.setpoints = [Setpoint(act.start, rec.p_kw, rec.q_kvar)]
            sent = await asyncio.to_thread(self.records.sent_setpoints, act.id)
            last = sent[-1][0] if sent else act.start
            note = (
                f"control interrupted by a gateway restart between {last:%H:%M:%S} and "
                f"{now:%H:%M:%S} UTC"
            )
            running.notes.append(note)
            done = [v.end for v in await asyncio.to_thread(self.records.verification, act.id)]
            running.verified_until = max(done) if done else None
            self.running = running
            end = act.end
            if reservation is not None:
                end = reservation.end if end is None else min(end, reservation.end)
            if end is not None and end <= now:
                await self._end(end, "closed out after the restart")
            else:
                log.warning("activation %s resumed: %s", act.id, note)

    async def run(self) -> None:
        """Control cycles until cancelled."""
        await self.start()
        while True:
            async with self._lock:
                await self.step()
            await self.clock.sleep(self.model.settings.control_cycle_s)

    async def step(self) -> None:
        """One cycle: the activation (if any), else the plan; forecasts at interval starts."""
        now = self.clock.now()
        fresh = None
        if self.plan is None or self._plan_at is None or now - self._plan_at >= self.model.step:
            fresh = await self._replan(now)
        if self.running is not None:
            await self._cycle(now)
        else:
            await self._execute_plan(now)
        await self._close_due(now)
        if self._last_forecast is None or now - self._last_forecast >= self.model.step:
            inp, plan = fresh or await self._replan(now)
            ff = await asyncio.to_thread(flexibility.forecast, self.model.microgrid, inp, plan, now)
            self._last_forecast = now
            await self.publisher.forecast(ff)

    # -- internals ---------------------------------------------------------------------------

    def _external(self, horizon: Horizon) -> Mapping[str, Sequence[float | None]] | None:
        return self.external(horizon) if self.external is not None else None

    def _q_base(self) -> float:
        return self.points.value(self.model.pcc, Quantity.REACTIVE_POWER) or 0.0

    async def _replan(self, now: datetime) -> tuple[PlanInput, PlanResult]:
        self.reservations = [r for r in self.reservations if r.end > now]
        horizon = self.model.horizon(now, max((r.end for r in self.reservations), default=None))
        external = self._external(horizon)
        inp = await self.inputs.plan_input(now, horizon, self.reservations, external)
        plan = await asyncio.to_thread(schedule, inp)
        for reason in plan.violations:
            log.warning("plan: %s", reason)
        self.plan, self._plan_at = plan, now
        return inp, plan

    def _baseline(self, plan: PlanResult, act: Activation) -> Baseline:
        q = self._q_base()
        return Baseline(
            plan.horizon,
            tuple(float(x) for x in plan.pcc_p),
            tuple(q for _ in range(plan.horizon.count)),
        )

    def _keep_bands(
        self, now: datetime, reservation: Reservation | None
    ) -> list[tuple[str, str, float, float]]:
        out = []
        for r in self.reservations:
            if reservation is not None and r.id == reservation.id:
                continue
            band = r.band_at(now)
            if band is not None and (band.p_up_kw > 0 or band.p_down_kw > 0):
                out.append((r.id, r.service, band.p_up_kw, band.p_down_kw))
        return out

    async def _dispatch(
        self,
        now: datetime,
        plan: PlanResult | None,
        act: Activation,
        reservation: Reservation | None,
        p: float | None,
        q: float | None,
        held: set[str],
    ) -> Dispatch:
        until = act.end or (reservation.end if reservation is not None else now + self.model.step)
        _, ders, keep = self.inputs.snapshot(
            now, plan, until, held, self._keep_bands(now, reservation)
        )
        pcc_p = self.points.value(self.model.pcc, Quantity.ACTIVE_POWER)
        pcc_q = self.points.value(self.model.pcc, Quantity.REACTIVE_POWER)
        if pcc_p is None:  # no measurement: predict from the DERs alone
            pcc_p = -sum(d.p_kw for d in ders)
        inp = DispatchInput(
            tuple(ders),
            pcc_p,
            pcc_q or 0.0,
            p,
            q if pcc_q is not None else None,
            self.model.grid,
            keep,
        )
        return await asyncio.to_thread(dispatch, inp)

    async def _cycle(self, now: datetime) -> None:
        run = self.running
        assert run is not None
        act = run.activation
        end = act.end
        if run.reservation is not None:
            end = run.reservation.end if end is None else min(end, run.reservation.end)
        if end is not None and now >= end:
            await self._end(end, "")
            return
        if now < act.start:
            return
        i = run.baseline.horizon.index(now)
        p, q = act.p_kw, act.q_kvar
        if run.reservation is not None and i is not None:
            env = envelope(
                run.reservation,
                np.array(run.baseline.p_kw),
                run.baseline.horizon,
                i,
                self.model.grid,
                run.baseline.q_at(i) or 0.0,
            )
            p, q, _, _ = clamp_setpoint(act, env)
            if env.q_max_kvar == env.q_min_kvar:
                q = None
        if not run.setpoints or (run.setpoints[-1].p_kw, run.setpoints[-1].q_kvar) != (p, q):
            sp = Setpoint(max(now, act.start), p, q)
            run.setpoints.append(sp)
            await asyncio.to_thread(self.records.pcc_setpoint, act.id, sp.start, p, q)
        held = set(run.targeted)
        result = await self._dispatch(now, self.plan, act, run.reservation, p, q, held)
        retarget: set[str] = set()
        if held and not result.met:
            # the centralized DERs alone fall short: new targets for the distributed ones
            free = await self._dispatch(now, self.plan, act, run.reservation, p, q, set())
            if abs(free.shortfall_p_kw) < abs(result.shortfall_p_kw) - TOLERANCE_KW:
                deadband = self.model.settings.setpoint_deadband_kw
                retarget = {i for i in held if abs(free.p[i] - run.targeted[i]) > deadband}
                result = free
        run.last = result
        targets: dict[str, Target] = {}
        for der_id, cap in self.model.caps.items():
            if not (cap.p_controllable or cap.q_controllable):
                continue
            if cap.distributed:
                if der_id in run.targeted and der_id not in retarget:
                    continue  # its own controller pursues the target; supervised below
                run.targeted[der_id] = result.p[der_id]
            targets[der_id] = Target(
                der_id,
                result.p[der_id] if cap.p_controllable else None,
                result.q[der_id] if (cap.q_controllable and q is not None) else None,
            )
        await self._write(now, act.id, targets)
        if run.due is not None:
            self.observer.in_force(act, max(asyncio.get_running_loop().time() - run.due, 0.0))
            run.due = None
        pcc_p = self.points.value(self.model.pcc, Quantity.ACTIVE_POWER)
        self.observer.cycled(act, now, p, run.baseline.p_at(i) if i is not None else None, pcc_p)
        run.cycles += 1
        self._supervise(run, now)
        # an interval is verified once the meter's readings beyond its end are stored
        await self._verify_completed(run, now - VERIFY_DELAY, final=False)

    async def _write(
        self, now: datetime, origin_id: str, targets: dict[str, Target], force: bool = False
    ) -> None:
        states = self.model.states(self.points)
        seqs: list[int] = []

        async def intend(item: Planned) -> None:
            # recorded before it is sent: a kill in the write leaves a trace (see start)
            seq = await asyncio.to_thread(
                self.records.intend_setpoint,
                origin_id,
                now,
                item.der,
                item.command.point,
                float(item.command.value),
                item.meaning,
            )
            seqs.append(seq)

        results, notes = await self.writer.apply(
            targets, self.model.caps, states, f"flex:{origin_id}", now, force=force, before=intend
        )
        rows = [
            (seq, res.status.value, item.note or res.detail)
            for seq, (item, res) in zip(seqs, results, strict=True)
        ]
        if rows:
            await asyncio.to_thread(self.records.settle_setpoints, rows)
        for note in notes:
            log.warning("%s: %s", origin_id, note)
            if self.running is not None and note not in self.running.notes:
                self.running.notes.append(note)

    def _supervise(self, run: Running, now: datetime) -> None:
        """A distributed DER far from its target is noted once (the loop compensates). A
        curtail-only DER (PV) cannot exceed what is available: its target counts up to that."""
        if run.cycles < 3:
            return
        states = self.model.states(self.points)
        for der_id, target in run.targeted.items():
            measured = states[der_id].p_kw
            if measured is None or der_id in run.supervised_notes:
                continue
            cap = self.model.caps[der_id]
            expected = target
            if cap.type is DerType.PV:
                expected = min(target, cap.natural_now(states[der_id]))
            if abs(measured - expected) > max(1.0, 0.1 * abs(expected)):
                run.supervised_notes.add(der_id)
                note = f"{der_id} (distributed) is at {measured:.1f} kW, target {target:.1f} kW"
                run.notes.append(note)
                log.warning("%s: %s", run.activation.id, note)

    async def _verify_completed(
        self, run: Running, now: datetime, final: bool
    ) -> Verification | None:
        """Publish the verification of the intervals completed by `now` (all intervals, cut
        at `now`, when final)."""
        if self.history is None:
            return None
        act = run.activation
        h = run.baseline.horizon
        if final:
            upto = now
        else:
            i = h.index(now)
            upto = h.start_of(i) if i is not None else min(now, h.end)
            if upto <= act.start or (run.verified_until is not None and upto <= run.verified_until):
                return None
        v = verify(
            act.id,
            run.reservation.id if run.reservation is not None else act.reservation_id,
            run.baseline,
            act.start,
            upto if final else act.end,
            upto,
            run.setpoints,
            await self._measurements(act.start, upto),
            final=final,
            note="; ".join(run.notes),
            reasons=run.decision.reasons,
        )
        if not final and run.verified_until is not None:
            fresh = tuple(x for x in v.intervals if x.start >= run.verified_until)
            v = replace(v, intervals=fresh)
        run.verified_until = upto
        if not v.intervals and not final:
            return None
        await asyncio.to_thread(self.records.save_verification, v)
        await self.publisher.verification(v)
        self.observer.verified(v)
        return v

    async def _measurements(self, start: datetime, end: datetime) -> Measurements:
        """Coupling-point history around [start, end): energy counters of the configured
        billing meter (coupling_point.billing_meter) where it maps them, else the first
        counter; power samples of the first power point."""
        margin = timedelta(minutes=1)

        async def series(q: Quantity, billing: bool = False) -> list[Sample]:
            found = self.points.find(self.model.pcc, q)
            if billing:
                found = sorted(found, key=lambda m: m.device.id != self.model.billing_meter)
            if not found or self.history is None:
                return []
            rows = await self.history.range(found[0].point.id, start - margin, end + margin)
            return pairs(rows)

        return Measurements(
            p=await series(Quantity.ACTIVE_POWER),
            q=await series(Quantity.REACTIVE_POWER),
            e_import=await series(Quantity.ENERGY_IMPORT, billing=True),
            e_export=await series(Quantity.ENERGY_EXPORT, billing=True),
            q_import=await series(Quantity.REACTIVE_ENERGY_IMPORT, billing=True),
            q_export=await series(Quantity.REACTIVE_ENERGY_EXPORT, billing=True),
        )

    async def _end(self, at: datetime, note: str, release: bool = True) -> None:
        """Return the DERs to their plan now (unless `release` is off: the next activation
        takes them over); the final verification and the record's close follow once the
        readings beyond the end are stored (`_close_due`)."""
        run = self.running
        assert run is not None
        if release:
            await self._release(self.clock.now(), run.activation.id)
        if note:
            run.notes.append(note)
        self.running = None
        self._closing.append((run, max(at, run.activation.start)))
        await self._close_due(self.clock.now())

    async def _close_due(self, now: datetime, force: bool = False) -> None:
        for run, at in list(self._closing):
            if not force and now < at + VERIFY_DELAY:
                continue
            self._closing.remove((run, at))
            act = run.activation
            done = await asyncio.to_thread(self.records.final_verification, act.id)
            if done:
                # computed before a restart, and maybe sent: the same message again (the
                # outbox drops it if queued), so what the AMS holds is what the records say
                rid = run.reservation.id if run.reservation is not None else act.reservation_id
                note = "; ".join(run.notes)
                v = Verification(act.id, rid, tuple(done), True, note, run.decision.reasons)
                await self.publisher.verification(v)
            else:
                await self._verify_completed(run, at, final=True)
            summary = "; ".join(run.notes) or f"ended at {at:%H:%M:%S} UTC"
            await asyncio.to_thread(
                self.records.end_activation, run.activation.id, now, "ended", summary
            )
            self.observer.ended(run.activation, at, summary)

    async def _release(self, now: datetime, origin_id: str) -> None:
        """After an activation every controllable DER goes back to its plan."""
        self.writer.forget()
        self._steered = set(self.model.caps)
        await self._write(now, origin_id, self._plan_targets(now), force=True)

    def _plan_targets(self, now: datetime) -> dict[str, Target]:
        """Set points of the DERs the plan moves away from their natural output (e.g. a
        battery pre-charging for a reserve); DERs the plan no longer moves but the MGMS
        steered are released once (a battery to 0, a PV ceiling lifted, a load uncurtailed).
        Forecast noise never steers a DER: only the plan's own deviation from natural does."""
        plan = self.plan
        i = None if plan is None else plan.horizon.index(now)
        states = self.model.states(self.points)
        out = {}
        moving: set[str] = set()
        for der_id, cap in self.model.caps.items():
            if not cap.p_controllable:
                continue
            q = 0.0 if cap.q_controllable else None
            if plan is not None and i is not None and der_id in plan.p:
                deviation = float(plan.p[der_id][i] - plan.natural[der_id][i])
                if abs(deviation) > self.model.settings.setpoint_deadband_kw:
                    out[der_id] = Target(der_id, float(plan.p[der_id][i]), q)
                    moving.add(der_id)
                    continue
            if der_id in self._steered:
                out[der_id] = Target(der_id, cap.natural_now(states[der_id]), q)
        self._steered = moving
        return out

    async def _execute_plan(self, now: datetime) -> None:
        """Outside activations the DERs follow the plan (e.g. pre-charging for a reserve)."""
        targets = self._plan_targets(now)
        if targets:
            await self._write(now, "plan", targets)
