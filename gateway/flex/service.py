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

The service is the entry point and the loop; the CRP flow is in its parts, each with the
state it owns: reservation in gateway.flex.reservation (`ReservationBook`: the accepted
reservations and the plan that keeps their bands); activation and control in
gateway.flex.activation (`ActivationControl`: the activation in force, the set point
writer, the DERs the plan steers); verification in gateway.flex.verification (`Verifier`:
activations waiting for their final verification); recovery after a restart in
gateway.flex.recovery. Each part gets the few capabilities it uses, typed in
gateway.flex.ports (its Protocol of the records, the point values, the clock, the
publisher); the records run every call on their database thread (gateway.sqlite).

LP solves run in a worker thread, but for a small site's activation dispatch (cheaper than
the hop: gateway.flex.activation); the point table is read on the event loop thread only.

Two locks, so that the control path never waits for planning: `_control` serializes what
moves the DERs (activations, control cycles), `_planning` what plans (Reserve
Notifications, replans, forecasts), whose LP solves take far longer than an activation
may wait (a notification's check re-solves the plan once per conflicting service). A plan
replaces the last in one step on the event loop, so control always sees a whole plan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

from gateway.config import LoadedConfig
from gateway.flex import flexibility, recovery
from gateway.flex.activation import ActivationControl
from gateway.flex.baseline import History
from gateway.flex.control import Controller, SetpointWriter
from gateway.flex.inputs import FlexModel, InputBuilder
from gateway.flex.intervals import Horizon
from gateway.flex.model import (
    Activation,
    ActivationDecision,
    FlexForecast,
    NotificationDecision,
    Reservation,
)
from gateway.flex.ports import (
    Clock,
    FlexObserver,
    FlexPublisher,
    PointValues,
    Records,
    Unobserved,
    WallClock,
)
from gateway.flex.reservation import ReservationBook
from gateway.flex.running import Running
from gateway.flex.schedule import PlanInput, PlanResult, schedule
from gateway.flex.verification import Verifier
from gateway.points import PointTable

log = logging.getLogger(__name__)


class FlexService:
    def __init__(
        self,
        config: LoadedConfig,
        points: PointValues,
        controller: Controller,
        records: Records,
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
        self.external = external
        self.book = ReservationBook(self.records)
        self._control = asyncio.Lock()
        self._planning = asyncio.Lock()
        self.verifier = Verifier(self.records, publisher, points, history)
        writer = SetpointWriter(controller, points, self.model.settings.setpoint_deadband_kw)
        self.control = ActivationControl(
            self.model,
            self.inputs,
            points,
            writer,
            self.records,
            self.book,
            self.verifier,
            self.clock,
        )
        self._last_forecast: datetime | None = None
        self._started = False
        self._observer: FlexObserver = Unobserved()

    @property
    def observer(self) -> FlexObserver:
        """Metrics and the status page; set by the composition root."""
        return self._observer

    @observer.setter
    def observer(self, observer: FlexObserver) -> None:
        self._observer = self.verifier.observer = self.control.observer = observer

    @property
    def running(self) -> Running | None:
        """The activation in force (gateway.flex.activation owns it)."""
        return self.control.running

    @running.setter
    def running(self, running: Running | None) -> None:
        self.control.running = running

    # -- business API for the northbound pipeline ------------------------------------------

    async def forecast(self) -> FlexForecast:
        """A fresh Flexibility Forecast (also published)."""
        await self.start()
        async with self._planning:
            now = self.clock.now()
            inp, plan = await self._replan(now)
            ff = await asyncio.to_thread(flexibility.forecast, self.model.microgrid, inp, plan, now)
            self._last_forecast = now
        await self.publisher.forecast(ff)
        return ff

    def reservation(self, reservation_id: str) -> Reservation | None:
        """An accepted reservation still held."""
        return self.book.held(reservation_id)

    @property
    def reservations(self) -> list[Reservation]:
        return self.book.reservations

    @reservations.setter
    def reservations(self, held: list[Reservation]) -> None:
        self.book.reservations = held

    @property
    def plan(self) -> PlanResult | None:
        return self.book.plan

    async def notify(self, reservation: Reservation, partial: bool = True) -> NotificationDecision:
        """Decide on a Reserve Notification (gateway.flex.reservation); a new acceptance
        changes the flexibility left, so a fresh forecast follows."""
        await self.start()
        async with self._planning:
            now = self.clock.now()

            async def plan_input(others: Sequence[Reservation]) -> PlanInput:
                horizon = self.model.horizon(now, reservation.end)
                return await self.inputs.plan_input(now, horizon, others, self._external(horizon))

            decision, fresh = await self.book.decide(reservation, now, partial, plan_input)
        if fresh and decision.accepted is not None:
            await self.forecast()  # the flexibility left changed
        return decision

    async def activate(self, act: Activation) -> ActivationDecision:
        """Check a Reserve Activation and put it in force (or refuse it), recorded."""
        received = asyncio.get_running_loop().time()  # its latency counts the checks too
        await self.start()
        async with self._control:
            return await self.control.decide(act, received, self._replan)

    # -- reload ------------------------------------------------------------------------------

    async def prepare_reload(self, config: LoadedConfig) -> Callable[[], Awaitable[None]]:
        """The model of a reloaded config (DERs, coupling point and internal limits, flex
        settings), built against its mapping; the commit swaps it in between two cycles."""
        model = FlexModel.build(config, PointTable(config))

        async def commit() -> None:
            async with self._planning, self._control:
                self.model = model
                self.inputs = InputBuilder(model, self.points, self.history)
                writer = SetpointWriter(
                    self._controller, self.points, model.settings.setpoint_deadband_kw
                )
                self.control.reconfigure(model, self.inputs, writer)
                self.book.planned(None, None)  # replanned on the new limits
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
        if self._started:
            return
        async with self._planning, self._control:
            if self._started:
                return
            self._started = True
            now = self.clock.now()
            recovered = await recovery.load(self.records, now)
            self.book.reservations = recovered.reservations
            for running, note in recovered.activations:
                self.control.running = running
                end = running.end
                if end is not None and end <= now:
                    await self.control.end(end, "closed out after the restart")
                    await self.control.close_due(now)
                else:
                    log.warning("activation %s resumed: %s", running.activation.id, note)
            await recovery.await_readings(self.points, (self.model.pcc, *self.model.caps))
            self.control.steered |= await recovery.settle_interrupted_writes(
                self.records, self.model.caps
            )

    async def run(self) -> None:
        """Control cycles until cancelled."""
        await self.start()
        while True:
            await self.step()
            await self.clock.sleep(self.model.settings.control_cycle_s)

    async def step(self) -> None:
        """One cycle: the activation (if any), else the plan; forecasts at interval starts."""
        now = self.clock.now()
        fresh = None
        if self.book.plan_due(now, self.model.step):
            async with self._planning:
                fresh = await self._replan(now)
        async with self._control:
            if self.control.running is not None:
                await self.control.cycle(now)
            else:
                await self.control.execute_plan(now)
        # verifications of the activation in force and of ended ones (history reads, the
        # LP-free comparison, the message out) outside the control lock: an activation
        # arriving meanwhile does not wait for them
        await self.control.verify_running(now)
        await self.control.close_due(now)
        if self._last_forecast is None or now - self._last_forecast >= self.model.step:
            async with self._planning:
                inp, plan = fresh or await self._replan(now)
                ff = await asyncio.to_thread(
                    flexibility.forecast, self.model.microgrid, inp, plan, now
                )
                self._last_forecast = now
            await self.publisher.forecast(ff)

    # -- internals ---------------------------------------------------------------------------

    def _external(self, horizon: Horizon) -> Mapping[str, Sequence[float | None]] | None:
        return self.external(horizon) if self.external is not None else None

    async def _replan(self, now: datetime) -> tuple[PlanInput, PlanResult]:
        self.book.drop_ended(now)
        held = self.book.reservations
        horizon = self.model.horizon(now, max((r.end for r in held), default=None))
        external = self._external(horizon)
        inp = await self.inputs.plan_input(now, horizon, held, external)
        plan = await asyncio.to_thread(schedule, inp)
        for reason in plan.violations:
            log.warning("plan: %s", reason)
        if self.book.reservations is held:
            # else a notification was accepted meanwhile: its plan (which holds it) stays
            self.book.planned(plan, now)
        return inp, plan
