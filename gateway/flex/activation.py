"""Activation and control, the real-time step of the CRP flow: a Reserve Activation is
checked (gateway.flex.conflict) and put in force; every control cycle the coupling-point
set point is dispatched over the DERs (gateway.flex.dispatch) on fresh measurements and
written (gateway.flex.control); after it ends, the DERs go back to the plan. Outside
activations the DERs follow the plan.

It owns the activation in force, the set point writer and the DERs the plan steers; it
reads the reservation book and hands ended activations to the verifier.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import numpy as np

from gateway.config import DerType
from gateway.flex.conflict import (
    TOLERANCE_KW,
    check_activation,
    clamp_setpoint,
    envelope,
    find_reservation,
)
from gateway.flex.control import Planned, SetpointWriter, Target
from gateway.flex.dispatch import Dispatch, DispatchInput, dispatch
from gateway.flex.inputs import FlexModel, InputBuilder
from gateway.flex.model import Activation, ActivationDecision, DecisionStatus, Reservation
from gateway.flex.ports import ActivationRecords, Clock, FlexObserver, PointValues, Unobserved
from gateway.flex.reservation import ReservationBook
from gateway.flex.running import Running, baseline_to_json
from gateway.flex.schedule import PlanInput, PlanResult
from gateway.flex.verification import VERIFY_DELAY, Verifier
from gateway.flex.verify import Baseline, Setpoint
from gateway.mapping import Quantity

log = logging.getLogger(__name__)

#: a dispatch of up to this many DERs is solved on the event loop (1-2 ms for 8 DERs): the
#: hop to a worker thread and back cost as much again, and the interpreter lock passed
#: back and forth with the loop stretched the solve itself (2.7 ms of CPU against 1.6);
#: a larger site's dispatch runs in a worker thread, so the loop is not held for long
INLINE_DISPATCH_DERS = 16

#: makes a fresh plan (and its input) at a time
Replan = Callable[[datetime], Awaitable[tuple[PlanInput, PlanResult]]]


class ActivationControl:
    def __init__(
        self,
        model: FlexModel,
        inputs: InputBuilder,
        points: PointValues,
        writer: SetpointWriter,
        records: ActivationRecords,
        book: ReservationBook,
        verifier: Verifier,
        clock: Clock,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.points = points
        self.writer = writer
        self.records = records
        self.book = book
        self.verifier = verifier
        self.clock = clock
        self.running: Running | None = None
        #: DERs the plan currently moves away from their natural output
        self.steered: set[str] = set()
        self.observer: FlexObserver = Unobserved()
        #: records queued and not awaited yet: the write recorded ahead of the next device
        #: command waits for them (they run before it), and so does the end of a decision
        #: or cycle (a failure is raised there)
        self._queued: list[Awaitable[None]] = []

    def reconfigure(self, model: FlexModel, inputs: InputBuilder, writer: SetpointWriter) -> None:
        """A reloaded config's model; the next cycle writes every target again against the
        new ratings (a fresh writer remembers nothing)."""
        self.model, self.inputs, self.writer = model, inputs, writer
        self.steered &= set(model.caps)
        if self.running is not None:
            for der in set(self.running.targeted) - set(model.caps):
                del self.running.targeted[der]

    async def decide(self, act: Activation, received: float, replan: Replan) -> ActivationDecision:
        """Check a Reserve Activation and put it in force (or refuse it), recorded.
        `received` is its arrival on the event loop's clock (its latency counts the checks
        too); `replan` makes a plan when none covers its start."""
        now = self.clock.now()
        known = await self.records.activation(act.id)
        if known is not None:
            return ActivationDecision(
                act.id, DecisionStatus(known.status), known.p_kw, known.q_kvar, known.reasons
            )
        over = self.running.end if self.running is not None else None
        if over is not None and over <= now:
            # its period is over though no control cycle ended it yet: it steers nothing
            # (the next reservation's first activation must not be refused for it)
            await self.end(over, "")
        reservation = find_reservation(act, self.book.reservations)
        plan = self.book.plan
        if plan is None or plan.horizon.index(max(now, act.start)) is None:
            _, plan = await replan(now)
        at = max(now, act.start)
        i = plan.horizon.index(at)
        env = None
        if reservation is not None and i is not None:
            env = envelope(
                reservation, plan.pcc_p, plan.horizon, i, self.model.grid, self._q_base()
            )
        trial = None
        tried: tuple[float | None, float | None] | None = None
        if env is not None or self.model.settings.allow_unreserved_activation:
            p, q = act.p_kw, act.q_kvar
            if env is not None:
                p, q, _, _ = clamp_setpoint(act, env)
            trial = await self._dispatch(now, plan, act, reservation, p, q, held=set())
            tried = (p, q)
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
                await self.end(now, "superseded by activation " + act.id, release=act.start > now)
            lead = max((act.start - now).total_seconds(), 0.0)
            self.running = Running(act, reservation, base, decision, received + lead)
        self._queue(
            self.records.save_activation(
                now,
                act,
                decision.status.value,
                decision.p_kw,
                decision.q_kvar,
                decision.reasons,
                None if base is None else baseline_to_json(base),
                "active" if base is not None else "refused",
            )
        )
        log.info(
            "activation %s %s %s",
            act.id,
            decision.status.value,
            "; ".join(map(str, decision.reasons)),
        )
        self.observer.decided(act, decision)
        if self.running is not None and self.running.activation.id == act.id and act.start <= now:
            # the trial is the first cycle's dispatch when it solved the same set point on
            # the same plan a moment ago: not solved twice before the answer
            solved = None
            if trial is not None and tried is not None and plan is self.book.plan:
                solved = (tried, trial)
            await self.cycle(now, solved)
        await self._recorded()
        return decision

    def _q_base(self) -> float:
        return self.points.value(self.model.pcc, Quantity.REACTIVE_POWER) or 0.0

    def _baseline(self, plan: PlanResult, act: Activation) -> Baseline:
        q = self._q_base()
        return Baseline(
            plan.horizon,
            tuple(float(x) for x in plan.pcc_p),
            tuple(q for _ in range(plan.horizon.count)),
        )

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
            now, plan, until, held, self.book.keep_bands(now, reservation)
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
        if len(ders) <= INLINE_DISPATCH_DERS:
            return dispatch(inp)
        return await asyncio.to_thread(dispatch, inp)

    async def cycle(
        self,
        now: datetime,
        solved: tuple[tuple[float | None, float | None], Dispatch] | None = None,
    ) -> None:
        """One control cycle of the activation in force; `solved` is a dispatch of a set
        point (P, Q) with no DER held, made on this cycle's measurements."""
        run = self.running
        assert run is not None
        act = run.activation
        end = run.end
        if end is not None and now >= end:
            await self.end(end, "")
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
            self._queue(self.records.pcc_setpoint(act.id, sp.start, p, q))
        held = set(run.targeted)
        if solved is not None and not held and solved[0] == (p, q):
            result = solved[1]
        else:
            result = await self._dispatch(now, self.book.plan, act, run.reservation, p, q, held)
        retarget: set[str] = set()
        if held and not result.met:
            # the centralized DERs alone fall short: new targets for the distributed ones
            free = await self._dispatch(now, self.book.plan, act, run.reservation, p, q, set())
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
        await self._recorded()

    async def verify_running(self, now: datetime) -> None:
        """Verify the intervals of the activation in force that completed (once the
        meter's readings beyond an interval's end are stored). The control loop calls it
        outside the control lock: the history reads and the message out are not the
        cycle's work, which an arriving activation waits for."""
        run = self.running
        if run is not None:
            await self.verifier.completed(run, self.model, now - VERIFY_DELAY, final=False)

    async def _write(
        self, now: datetime, origin_id: str, targets: dict[str, Target], force: bool = False
    ) -> None:
        states = self.model.states(self.points)
        seqs: list[int] = []

        async def intend(items: list[Planned]) -> None:
            # recorded before they are sent: a kill in the write leaves a trace (see start)
            rows = [(i.der, i.command.point, float(i.command.value), i.meaning) for i in items]
            seqs.extend(await self.records.intend_setpoints(origin_id, now, rows))
            await self._recorded()  # queued before the intents: done by now

        results, notes = await self.writer.apply(
            targets, self.model.caps, states, f"flex:{origin_id}", now, force=force, before=intend
        )
        rows = [
            (seq, res.status.value, item.note or res.detail)
            for seq, (item, res) in zip(seqs, results, strict=True)
        ]
        if rows:
            await self.records.settle_setpoints(rows)
        for note in notes:
            log.warning("%s: %s", origin_id, note)
            if self.running is not None and note not in self.running.notes:
                self.running.notes.append(note)

    def _queue(self, written: Awaitable[None]) -> None:
        """A records write queued on the database thread, awaited by `_recorded`: a round
        trip less on the path to the answer (each is two hand-overs of the interpreter
        lock, 5-20 ms each under load)."""
        self._queued.append(written)

    async def _recorded(self) -> None:
        """Wait for the records writes queued so far (raising the first failure)."""
        queued, self._queued = self._queued, []
        for written in queued:
            await written

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

    async def end(self, at: datetime, note: str, release: bool = True) -> None:
        """Return the DERs to their plan now (unless `release` is off: the next activation
        takes them over); the final verification and the record's close follow once the
        readings beyond the end are stored (`close_due`, from the control loop: not here,
        where a new activation supersedes this one and waits for its answer)."""
        run = self.running
        assert run is not None
        if release:
            await self.release(self.clock.now(), run.activation.id)
        if note:
            run.notes.append(note)
        self.running = None
        self.verifier.ended(run, at)

    async def close_due(self, now: datetime, force: bool = False) -> None:
        await self.verifier.close_due(self.model, now, force)

    async def release(self, now: datetime, origin_id: str) -> None:
        """After an activation every controllable DER goes back to its plan."""
        self.writer.forget()
        self.steered = set(self.model.caps)
        await self._write(now, origin_id, self.plan_targets(now), force=True)

    def plan_targets(self, now: datetime) -> dict[str, Target]:
        """Set points of the DERs the plan moves away from their natural output (e.g. a
        battery pre-charging for a reserve); DERs the plan no longer moves but the MGMS
        steered are released once (a battery to 0, a PV ceiling lifted, a load uncurtailed).
        Forecast noise never steers a DER: only the plan's own deviation from natural does."""
        plan = self.book.plan
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
            if der_id in self.steered:
                out[der_id] = Target(der_id, cap.natural_now(states[der_id]), q)
        self.steered = moving
        return out

    async def execute_plan(self, now: datetime) -> None:
        """Outside activations the DERs follow the plan (e.g. pre-charging for a reserve)."""
        targets = self.plan_targets(now)
        if targets:
            await self._write(now, "plan", targets)
