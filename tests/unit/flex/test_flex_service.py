"""CRP scenarios end to end in simulated time: the flexibility service on the firmware-sim
physics of the demo microgrid (battery, PV, load, coupling meter), readings and commands
going through the point table and the mapped point roles."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import FlexSettings, StandingReserve
from gateway.flex import activation, reservation
from gateway.flex.conflict import NotificationCheck, check_notification
from gateway.flex.dispatch import Dispatch, DispatchInput, dispatch
from gateway.flex.model import (
    Activation,
    Band,
    DecisionStatus,
    ReasonCode,
    Reservation,
    Verification,
)
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.mapping import Quantity
from gateway.model import Command, CommandResult
from gateway.points import PointTable
from gateway.sqlite import read_only
from tests.support.flexsim import Bench, BenchClock, Publisher, Stored

START = datetime(2024, 6, 3, 16, 50, tzinfo=UTC)
T17 = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


class World:
    def __init__(self, tmp: Path, bench: Bench) -> None:
        self.tmp = tmp
        self.bench = bench
        self.publisher = Publisher()
        self.records = FlexRecords(tmp / "flex.sqlite")
        self.service = self.new_service()

    def new_service(self) -> FlexService:
        return FlexService(
            self.bench.config,
            self.bench.table,
            self.bench.controller,
            self.records,
            self.publisher,
            self.bench.history,
            BenchClock(self.bench),
        )

    async def run_until(self, t: datetime) -> None:
        cycle = self.bench.config.gateway.flex.control_cycle_s
        while self.bench.now() < t:
            await self.service.step()
            self.bench.advance(cycle)

    def pcc(self) -> float:
        value = self.bench.table.value("pcc", Quantity.ACTIVE_POWER)
        assert value is not None
        return value

    def baseline_now(self) -> float:
        plan = self.service.plan
        assert plan is not None
        i = plan.horizon.index(self.bench.now())
        assert i is not None
        return float(plan.pcc_p[i])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    bench = Bench.warmed(START)
    bench.config.gateway.flex = FlexSettings(interval_s=300, control_cycle_s=5.0, horizon_h=6)
    w = World(tmp_path, bench)
    await w.records.open()
    yield w
    await w.records.close()


def bands(first: datetime, n: int, up: float, down: float = 0.0) -> tuple[Band, ...]:
    return tuple(
        Band(first + k * FIVE, first + (k + 1) * FIVE, p_up_kw=up, p_down_kw=down) for k in range(n)
    )


async def test_crp_cycle_met(world: World) -> None:
    ff = await world.service.forecast()
    assert world.publisher.forecasts == [ff]
    assert ff.intervals[0].p_up_kw > 60  # battery 50 kW plus part of the load
    decision = await world.service.notify(Reservation("res-1", bands(T17, 4, 40.0)))
    assert decision.status is DecisionStatus.ACCEPTED
    # the offer shrank by what was sold
    left = world.publisher.forecasts[-1].intervals[2]
    assert left.p_up_kw == pytest.approx(ff.intervals[2].p_up_kw - 40.0, abs=2.0)
    await world.run_until(T17)
    base = world.baseline_now()
    act = Activation("act-1", T17, T17 + 3 * FIVE, p_kw=base - 30.0, reservation_id="res-1")
    d = await world.service.activate(act)
    assert d.status is DecisionStatus.ACCEPTED
    await world.run_until(T17 + 3 * FIVE - timedelta(seconds=10))
    assert world.pcc() == pytest.approx(base - 30.0, abs=1.0)  # closed loop on the meter
    await world.run_until(T17 + 4 * FIVE)
    final = world.publisher.verifications[-1]
    assert final.final and final.activation_id == "act-1" and final.reservation_id == "res-1"
    assert len(final.intervals) == 3
    for iv in final.intervals:
        assert iv.source == "energy_counters"
        # one absolute set point; the baseline rises with the evening load
        assert iv.set_p_kw == pytest.approx(base - 30.0)
        assert iv.requested_kw == pytest.approx(iv.baseline_p_kw - iv.set_p_kw)
        assert iv.requested_kw >= 30.0 - 1e-6
        assert iv.delivered_pct is not None and iv.delivered_pct >= 95.0
    assert final.delivered_pct is not None and final.delivered_pct >= 95.0
    # interim verifications went out as each interval ended; the last one is the final
    assert [v.final for v in world.publisher.verifications] == [False, False, True]
    assert [len(v.intervals) for v in world.publisher.verifications] == [1, 1, 3]
    # afterwards the battery is back on its plan (idle)
    assert world.bench.table.value("bess1", Quantity.ACTIVE_POWER) == pytest.approx(0.0, abs=0.5)
    assert world.service.running is None
    record = await world.records.activation("act-1")
    assert record is not None and record.state == "ended"
    assert await world.records.verification("act-1") == list(final.intervals)
    points = {p for _, _, p, _, _ in await world.records.sent_setpoints("act-1")}
    assert "bess1.p_set" in points


async def test_partial_delivery_is_reported_honestly(world: World) -> None:
    await world.service.forecast()
    d = await world.service.notify(Reservation("res-2", bands(T17, 3, 60.0)))
    assert d.status is DecisionStatus.ACCEPTED
    await world.run_until(T17)
    world.bench.grid.ders["bess1"].online = False  # the battery trips after the sale
    world.bench.advance(1)
    world.bench.sample()
    base = world.baseline_now()
    act = Activation("act-2", T17, T17 + 2 * FIVE, p_kw=base - 60.0, reservation_id="res-2")
    d = await world.service.activate(act)
    assert d.status is DecisionStatus.CURTAILED
    assert d.p_kw == pytest.approx(base - 60.0)  # still pursued: the most it can
    assert any("load1 curtailable share 60 %" in r.message for r in d.reasons)
    await world.run_until(T17 + 3 * FIVE)
    final = world.publisher.verifications[-1]
    assert final.final
    pct = final.delivered_pct
    assert pct is not None and 40.0 < pct < 90.0
    assert final.reasons == d.reasons


async def test_refused_by_the_conflict_check(world: World) -> None:
    world.bench.config.gateway.flex = FlexSettings(
        interval_s=300,
        control_cycle_s=5.0,
        horizon_h=6,
        reserves=[StandingReserve(id="fcr1", service="FCR", ders=["bess1"], up_kw=50, down_kw=50)],
    )
    world.service = world.new_service()
    world.bench.grid.ders["load1"].online = False  # nothing but the battery could move
    world.bench.grid.ders["pv1"].online = False
    world.bench.advance(1)
    world.bench.sample()
    d = await world.service.notify(Reservation("res-3", bands(T17, 2, 20.0)))
    assert d.status is DecisionStatus.REFUSED and d.accepted is None
    assert any(r.code is ReasonCode.RESERVE and r.subject == "FCR fcr1" for r in d.reasons)
    audit = await world.records.audit_log("reservation")
    assert audit[-1][2:4] == ("res-3", "refused")
    assert any("fcr1" in r.message for r in audit[-1][4])
    # an activation for it finds no reservation
    act = Activation("act-3", T17, T17 + FIVE, p_kw=0.0, reservation_id="res-3")
    a = await world.service.activate(act)
    assert a.status is DecisionStatus.REFUSED and a.reasons[0].code is ReasonCode.NO_RESERVATION
    assert world.bench.controller.written == []  # nothing was touched


async def test_second_activation_of_another_reservation_is_refused(world: World) -> None:
    await world.service.notify(Reservation("res-a", bands(T17, 2, 20.0)))
    await world.service.notify(Reservation("res-b", bands(T17, 2, 10.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    first = await world.service.activate(
        Activation("a", T17, T17 + 2 * FIVE, p_kw=base - 20, reservation_id="res-a")
    )
    assert first.status is DecisionStatus.ACCEPTED
    second = await world.service.activate(
        Activation("b", T17, T17 + 2 * FIVE, p_kw=base - 10, reservation_id="res-b")
    )
    assert second.status is DecisionStatus.REFUSED
    assert "activation a of reservation res-a" in second.reasons[0].message
    # the same message delivered twice gets the same answer and changes nothing
    again = await world.service.activate(
        Activation("b", T17, T17 + 2 * FIVE, p_kw=0.0, reservation_id="res-b")
    )
    assert again == second


async def test_the_next_reservation_activates_as_soon_as_the_last_one_ended(
    world: World,
) -> None:
    """An activation whose period is over no longer steers the coupling point, even before
    a control cycle noticed: the first activation of the next reservation is accepted."""
    await world.service.notify(Reservation("res-a", bands(T17, 1, 20.0)))
    await world.service.notify(Reservation("res-b", bands(T17 + FIVE, 1, 20.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    first = await world.service.activate(
        Activation("a", T17, T17 + FIVE, p_kw=base - 10, reservation_id="res-a")
    )
    assert first.status is DecisionStatus.ACCEPTED
    world.bench.advance(FIVE.total_seconds())  # no cycle ran since res-a ended
    second = await world.service.activate(
        Activation("b", T17 + FIVE, T17 + 2 * FIVE, p_kw=base - 10, reservation_id="res-b")
    )
    assert second.status is not DecisionStatus.REFUSED, second.reasons
    running = world.service.running
    assert running is not None and running.activation.id == "b"


async def test_an_activation_does_not_wait_for_a_notification_being_checked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control path never queues behind planning: while a Reserve Notification's check
    (its LP solves) runs, an activation of an accepted reservation is decided and written."""
    await world.service.notify(Reservation("res-a", bands(T17, 2, 20.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    checking, release = threading.Event(), threading.Event()

    def slow_check(*args: Any) -> NotificationCheck:
        checking.set()
        release.wait(30)
        return check_notification(*args)

    monkeypatch.setattr(reservation, "check_notification", slow_check)
    notified = asyncio.create_task(
        world.service.notify(Reservation("res-b", bands(T17 + 2 * FIVE, 1, 5.0)))
    )
    try:
        assert await asyncio.to_thread(checking.wait, 30)
        act = Activation("a", T17, T17 + 2 * FIVE, p_kw=base - 10, reservation_id="res-a")
        decided = await asyncio.wait_for(world.service.activate(act), 10)
        assert decided.status is DecisionStatus.ACCEPTED
        assert any(c.origin == "flex:a" for c in world.bench.controller.written)
        assert not notified.done()  # it was still being checked
    finally:
        release.set()
        await notified
    assert notified.result().status is DecisionStatus.ACCEPTED


async def test_an_activation_is_dispatched_once_before_its_answer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision's trial dispatch is the first cycle's: one LP solve, not two, on the
    path to the answer, and the set points it found are the ones written."""
    await world.service.notify(Reservation("res-a", bands(T17, 2, 20.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    solved: list[Dispatch] = []

    def counted(inp: DispatchInput) -> Dispatch:
        solved.append(dispatch(inp))
        return solved[-1]

    monkeypatch.setattr(activation, "dispatch", counted)
    act = Activation("a", T17, T17 + 2 * FIVE, p_kw=base - 10, reservation_id="res-a")
    decided = await world.service.activate(act)
    assert decided.status is DecisionStatus.ACCEPTED
    assert len(solved) == 1
    written = {c.point: c.value for c in world.bench.controller.written if c.origin == "flex:a"}
    assert written["bess1.p_set"] == pytest.approx(solved[0].p["bess1"], abs=1e-3)


@pytest.mark.parametrize("inline", [True, False])
async def test_a_small_sites_dispatch_is_solved_on_the_loop_a_large_ones_in_a_thread(
    world: World, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    """A few DERs' LP costs less than the hop to a worker thread and back; a site with
    more DERs than INLINE_DISPATCH_DERS is solved off the loop (here the threshold is put
    below the demo's size to stand for one)."""
    await world.service.notify(Reservation("res-t", bands(T17, 2, 20.0)))
    await world.run_until(T17)
    if not inline:
        monkeypatch.setattr(activation, "INLINE_DISPATCH_DERS", 1)
    threads: list[threading.Thread] = []

    def where(inp: DispatchInput) -> Dispatch:
        threads.append(threading.current_thread())
        return dispatch(inp)

    monkeypatch.setattr(activation, "dispatch", where)
    base = world.baseline_now()
    act = Activation("t", T17, T17 + 2 * FIVE, p_kw=base - 10, reservation_id="res-t")
    assert (await world.service.activate(act)).status is DecisionStatus.ACCEPTED
    assert threads
    assert all((t is threading.main_thread()) is inline for t in threads)


async def test_the_decision_and_set_point_are_committed_before_the_first_command(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The activation's record and its coupling-point set point are queued, not awaited
    one by one; the intents of the writes are awaited, and what was queued before them is
    committed by then: a kill at the first command finds all three on disk."""
    await world.service.notify(Reservation("res-c", bands(T17, 2, 20.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    seen: list[dict[str, int]] = []
    write = world.bench.controller.write
    counts = {
        "intents": "SELECT count(*) FROM flex_setpoint WHERE activation_id = 'c'",
        "setpoints": "SELECT count(*) FROM flex_pcc_setpoint WHERE activation_id = 'c'",
        "decisions": "SELECT count(*) FROM flex_activation WHERE id = 'c'",
    }

    async def first_looks(command: Command) -> CommandResult:
        if not seen:
            with read_only(world.records.path, "flex records") as conn:
                seen.append({k: conn.execute(sql).fetchone()[0] for k, sql in counts.items()})
        return await write(command)

    monkeypatch.setattr(world.bench.controller, "write", first_looks)
    act = Activation("c", T17, T17 + 2 * FIVE, p_kw=base - 10, reservation_id="res-c")
    assert (await world.service.activate(act)).status is DecisionStatus.ACCEPTED
    assert seen[0]["intents"] >= 1
    assert (seen[0]["setpoints"], seen[0]["decisions"]) == (1, 1)


async def test_distributed_der_gets_one_target_and_is_supervised(world: World) -> None:
    # curtailing the (distributed) load is made cheaper than cycling the battery
    load = next(d for d in world.bench.config.gateway.ders if d.id == "load1")
    load.ratings.cost_per_kwh = 0.01
    world.service = world.new_service()
    await world.service.notify(Reservation("res-d", bands(T17, 3, 45.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    written_before = len(world.bench.controller.written)
    await world.service.activate(
        Activation("act-d", T17, T17 + 2 * FIVE, p_kw=base - 45.0, reservation_id="res-d")
    )
    await world.run_until(T17 + 2 * FIVE - timedelta(seconds=10))
    during = world.bench.controller.written[written_before:]
    load_cmds = [c for c in during if c.point == "load1.curtail"]
    bess_cmds = [c for c in during if c.point == "bess1.p_set"]
    assert len(load_cmds) == 1  # the load's own controller got its target once
    assert load_cmds[0].value == pytest.approx(60.0)  # all it may curtail: the cheaper part
    assert len(bess_cmds) > 3  # the battery is corrected as the demand drifts
    # the set point is held within the band of each interval around its baseline
    running = world.service.running
    assert running is not None
    assert world.pcc() == pytest.approx(running.setpoints[-1].p_kw, abs=1.0)
    await world.run_until(T17 + 3 * FIVE)
    final = world.publisher.verifications[-1]
    assert all(iv.delivered_pct is not None and iv.delivered_pct >= 95 for iv in final.intervals)
    # released: the load is no longer curtailed
    assert world.bench.grid.ders["load1"].curtail_pct == 0.0  # type: ignore[attr-defined]


async def test_distributed_der_gets_a_new_target_when_the_rest_falls_short(world: World) -> None:
    # more than the battery's 50 kW: as the evening demand grows under a fixed curtailment
    # the battery saturates, and the load's controller is given a new target
    await world.service.notify(Reservation("res-e", bands(T17, 3, 65.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    await world.service.activate(
        Activation("act-e", T17, T17 + 2 * FIVE, p_kw=base - 65.0, reservation_id="res-e")
    )
    await world.run_until(T17 + 3 * FIVE)
    load_cmds = [c for c in world.bench.controller.written if c.point == "load1.curtail"]
    assert len(load_cmds) >= 3  # first target, at least one new target, the release
    final = world.publisher.verifications[-1]
    assert all(iv.delivered_pct is not None and iv.delivered_pct >= 95 for iv in final.intervals)


async def test_a_superseding_activation_takes_the_ders_over_without_a_detour(
    world: World,
) -> None:
    """A new activation of the same reservation starting now is dispatched at once: the DERs
    go from the old set points to the new ones, never through the plan's in between."""
    await world.service.notify(Reservation("res-s", bands(T17, 3, 45.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    end = T17 + 2 * FIVE
    first = Activation("s1", T17, end, p_kw=base - 40.0, reservation_id="res-s")
    assert (await world.service.activate(first)).status is DecisionStatus.ACCEPTED
    await world.run_until(T17 + timedelta(seconds=30))
    before = len(world.bench.controller.written)
    now = world.bench.now()
    second = Activation("s2", now, end, p_kw=base - 20.0, reservation_id="res-s")
    assert (await world.service.activate(second)).status is DecisionStatus.ACCEPTED
    handover = world.bench.controller.written[before:]
    assert handover and {c.origin for c in handover} == {"flex:s2"}
    bess = [c.value for c in handover if c.point == "bess1.p_set"]
    assert len(bess) == 1 and bess[0] > 5.0  # still discharging, less: not back to idle
    await world.run_until(now + timedelta(seconds=30))
    assert world.pcc() == pytest.approx(base - 20.0, abs=1.0)
    # the superseded one is closed out with its final verification
    record = await world.records.activation("s1")
    assert record is not None and record.state == "ended"
    assert any(v.final and v.activation_id == "s1" for v in world.publisher.verifications)
    running = world.service.running
    assert running is not None and running.activation.id == "s2"
    # one that starts later does release the DERs to the plan until it starts
    later = T17 + FIVE
    third = Activation("s3", later, end, p_kw=base - 30.0, reservation_id="res-s")
    before = len(world.bench.controller.written)
    assert (await world.service.activate(third)).status is DecisionStatus.ACCEPTED
    assert {c.origin for c in world.bench.controller.written[before:]} == {"flex:s2"}


async def test_an_activation_survives_a_restart(world: World) -> None:
    await world.service.notify(Reservation("res-r", bands(T17, 4, 30.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    await world.service.activate(
        Activation("act-r", T17, T17 + 3 * FIVE, p_kw=base - 30.0, reservation_id="res-r")
    )
    await world.run_until(T17 + FIVE + timedelta(seconds=30))
    # the gateway stops for two minutes; the battery keeps its last set point meanwhile
    world.bench.advance(120)
    world.service = world.new_service()
    await world.service.start()
    assert world.service.running is not None
    await world.run_until(T17 + 4 * FIVE)
    final = world.publisher.verifications[-1]
    assert final.final and final.activation_id == "act-r"
    assert "restart" in final.note
    assert [iv.start for iv in final.intervals] == [T17 + k * FIVE for k in range(3)]


async def test_a_new_activation_does_not_wait_for_the_verification_of_an_ended_one(
    world: World,
) -> None:
    """s1 is superseded by s2; when s3 supersedes s2 a while later, s1's final verification
    is due, but it is the control loop's work (history reads, the comparison, the message
    out): s3's answer does not wait for it. The next cycle sends it."""
    await world.service.notify(Reservation("res-v", bands(T17, 3, 45.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    end = T17 + 2 * FIVE
    for k, (name, delta) in enumerate((("v1", 40.0), ("v2", 30.0), ("v3", 20.0))):
        now = world.bench.now()
        act = Activation(name, now, end, p_kw=base - delta, reservation_id="res-v")
        assert (await world.service.activate(act)).status is DecisionStatus.ACCEPTED
        if k < 2:
            world.bench.advance(30)  # no cycle in between: only the activations run
    sent = {v.activation_id for v in world.publisher.verifications if v.final}
    assert "v1" not in sent
    await world.service.step()
    sent = {v.activation_id for v in world.publisher.verifications if v.final}
    assert "v1" in sent  # v2 ended just now: its readings beyond the end are not in yet


async def test_a_new_activation_does_not_wait_for_the_verification_of_the_one_in_force(
    world: World,
) -> None:
    """w1 is in force when its first interval completes; the control loop verifies it
    (history reads, the comparison, the message out, held here until w2 is answered)
    outside the control lock, so w2, arriving meanwhile, is answered at once."""
    await world.service.notify(Reservation("res-w", bands(T17, 3, 45.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    end = T17 + 3 * FIVE
    first = Activation("w1", T17, end, p_kw=base - 40.0, reservation_id="res-w")
    assert (await world.service.activate(first)).status is DecisionStatus.ACCEPTED
    await world.run_until(T17 + FIVE)
    world.bench.advance(30)  # the first interval's readings beyond its end are stored
    publishing, answered = asyncio.Event(), asyncio.Event()
    publish = world.publisher.verification

    async def held(message: Verification) -> None:
        publishing.set()
        await answered.wait()
        await publish(message)

    world.publisher.verification = held  # type: ignore[method-assign]
    cycle = asyncio.create_task(world.service.step())
    await asyncio.wait_for(publishing.wait(), 10)
    second = Activation("w2", world.bench.now(), end, p_kw=base - 30.0, reservation_id="res-w")
    try:
        decision = await asyncio.wait_for(world.service.activate(second), 10)
    finally:
        answered.set()
        await cycle
    assert decision.status is DecisionStatus.ACCEPTED
    assert [v.activation_id for v in world.publisher.verifications if not v.final] == ["w1"]


async def test_an_activation_that_ended_during_a_restart_is_closed_out(world: World) -> None:
    await world.service.notify(Reservation("res-c", bands(T17, 2, 30.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    await world.service.activate(
        Activation("act-c", T17, T17 + FIVE, p_kw=base - 30.0, reservation_id="res-c")
    )
    await world.run_until(T17 + timedelta(minutes=2))
    world.bench.advance(600)  # down past the activation's end
    world.service = world.new_service()
    await world.service.start()
    assert world.service.running is None
    final = world.publisher.verifications[-1]
    assert final.final and "closed out after the restart" in final.note
    record = await world.records.activation("act-c")
    assert record is not None and record.state == "ended"


async def test_the_plan_precharges_before_a_reserved_period(tmp_path: Path) -> None:
    """An almost empty battery and an up band for an hour from 17:00: the plan charges it
    in time, and the whole band is then delivered."""
    bench = Bench.warmed(datetime(2024, 6, 3, 16, 0, tzinfo=UTC))
    bench.config.gateway.flex = FlexSettings(interval_s=300, control_cycle_s=10.0, horizon_h=6)
    bench.grid.ders["bess1"].soc_pct = 12.0  # type: ignore[attr-defined]
    bench.sample()
    w = World(tmp_path, bench)
    await w.records.open()
    d = await w.service.notify(Reservation("res-p", bands(T17, 12, 70.0)))
    assert d.status is DecisionStatus.ACCEPTED
    await w.run_until(T17)
    soc = bench.table.value("bess1", Quantity.STATE_OF_CHARGE)
    assert soc is not None and soc > 25.0
    base = w.baseline_now()
    end = T17 + timedelta(hours=1)
    await w.service.activate(
        Activation("act-p", T17, end, p_kw=base - 70.0, reservation_id="res-p")
    )
    await w.run_until(end + FIVE)
    final = w.publisher.verifications[-1]
    assert final.final and len(final.intervals) == 12
    assert min(iv.delivered_pct or 0.0 for iv in final.intervals) >= 95.0
    await w.records.close()


async def test_an_external_pv_forecast_moves_the_baseline(world: World) -> None:
    from gateway.flex.intervals import Horizon

    def cloudy(horizon: Horizon) -> dict[str, list[float | None]]:
        return {"pv1": [0.0] * horizon.count}  # the forecast service expects no sun

    plain = await world.service.forecast()
    world.service.external = cloudy
    clouded = await world.service.forecast()
    # PV produces ~14 kW now; with 80 % weight on a forecast of 0 the import rises
    i = 3
    assert clouded.intervals[i].baseline_p_kw > plain.intervals[i].baseline_p_kw + 5.0


async def test_an_activation_killed_before_its_first_cycle_is_verified_as_asked(
    world: World,
) -> None:
    """Accepted ahead of its start, then the gateway dies before the first control cycle
    and stays down past the end: the verification asks what was decided, from the start,
    and finds it not delivered (no set point reached the battery)."""
    await world.service.notify(Reservation("res-k", bands(T17, 2, 30.0)))
    await world.run_until(T17 - timedelta(minutes=1))
    base = world.baseline_now()
    decision = await world.service.activate(
        Activation("act-k", T17, T17 + 2 * FIVE, p_kw=base - 30.0, reservation_id="res-k")
    )
    assert decision.p_kw is not None
    assert await world.records.pcc_setpoints("act-k") == []  # not begun when the gateway died
    world.bench.advance(13 * 60)  # down past the activation's end
    world.service = world.new_service()
    await world.service.start()
    final = world.publisher.verifications[-1]
    assert final.final and final.activation_id == "act-k"
    assert [iv.start for iv in final.intervals] == [T17, T17 + FIVE]
    for iv in final.intervals:
        assert iv.set_p_kw == pytest.approx(decision.p_kw)
        assert iv.requested_kw == pytest.approx(30.0, abs=3.0)
        assert iv.delivered_pct is not None and abs(iv.delivered_pct) < 10.0


async def test_a_repeat_just_after_a_restart_finds_the_recorded_reservation(
    world: World,
) -> None:
    """The AMS repeats an activation the moment the restarted gateway answers again, before
    its control loop ran: the reservation the records hold is found (not refused as
    unknown)."""
    await world.service.notify(Reservation("res-e", bands(T17, 2, 30.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    world.service = world.new_service()  # restarted; run() has not begun yet
    decision = await world.service.activate(
        Activation("act-e", T17, T17 + FIVE, p_kw=base - 30.0, reservation_id="res-e")
    )
    assert decision.status is not DecisionStatus.REFUSED, decision.reasons  # curtailed at most


async def test_a_final_verification_computed_before_a_kill_is_sent_as_recorded(
    world: World,
) -> None:
    """Killed after the final verification was queued but before the activation was
    closed: at the restart the same final goes out again (the outbox keeps the first copy),
    not a recomputation that would leave the records disagreeing with the AMS."""
    await world.service.notify(Reservation("res-f", bands(T17, 1, 30.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    await world.service.activate(
        Activation("act-f", T17, T17 + FIVE, p_kw=base - 30.0, reservation_id="res-f")
    )
    await world.run_until(T17 + FIVE + timedelta(seconds=30))
    first = world.publisher.verifications[-1]
    assert first.final
    # the crash window: the record still open; the store now holds a different reading at
    # the end of the interval (one buffered when the first verification was computed)
    await world.records.db.call(
        lambda db: db.execute("UPDATE flex_activation SET state = 'active' WHERE id = 'act-f'")
    )
    rows = world.bench.history._rows["pcc.e_import"]
    k = next(i for i, r in enumerate(rows) if r.time >= T17 + FIVE)
    assert rows[k].value is not None
    rows[k] = Stored(rows[k].time, rows[k].value + 5.0)
    world.service = world.new_service()
    await world.service.start()
    again = world.publisher.verifications[-1]
    assert again is not first and again.final
    assert again.intervals == first.intervals
    assert await world.records.verification("act-f") == list(first.intervals)
    record = await world.records.activation("act-f")
    assert record is not None and record.state == "ended"


async def test_the_first_decision_after_a_start_waits_for_readings(world: World) -> None:
    """Restarted with an empty point table (no poll yet): the activation the AMS repeats
    right away is decided once the readings are in, on the real baseline, not on zeros."""
    await world.service.notify(Reservation("res-w", bands(T17, 2, 30.0)))
    await world.run_until(T17)
    base = world.baseline_now()
    assert base > 20.0  # the evening import
    world.bench.table = PointTable(world.bench.config)  # what a fresh process holds
    world.bench.table.listen(world.bench.history.add_all)
    world.service = world.new_service()
    act = Activation("act-w", T17, T17 + FIVE, p_kw=base - 30.0, reservation_id="res-w")
    deciding = asyncio.create_task(world.service.activate(act))
    await asyncio.sleep(0.3)
    assert not deciding.done()  # waiting for the first poll
    world.bench.sample()
    decision = await asyncio.wait_for(deciding, 5)
    assert decision.status is not DecisionStatus.REFUSED, decision.reasons
    record = await world.records.activation("act-w")
    assert record is not None and record.baseline is not None
    assert record.baseline["p"][0] == pytest.approx(base, abs=5.0)


async def test_a_write_cut_by_a_kill_is_found_and_written_again(world: World) -> None:
    """Killed between sending a set point and learning its result: the record says
    `sending`; the next start marks it unknown and writes that DER back to its plan."""
    await world.run_until(START + timedelta(minutes=1))
    await world.records.intend_setpoints(
        "plan", world.bench.now(), [("bess1", "bess1.p_set", 20.0, 20.0)]
    )
    world.bench.grid.apply("bess1", Quantity.ACTIVE_POWER_SETPOINT, 20.0)  # it did arrive
    world.bench.advance(5)
    world.service = world.new_service()
    await world.service.start()
    assert await world.records.unsettled_setpoints() == []
    await world.run_until(world.bench.now() + timedelta(seconds=10))
    writes = [w for w in await world.records.sent_setpoints("plan") if w[2] == "bess1.p_set"]
    assert [w[4] for w in writes] == ["unknown", "confirmed"]
    assert writes[-1][3] == pytest.approx(0.0)  # back to its plan: idle
    assert world.bench.table.value("bess1", Quantity.ACTIVE_POWER) == pytest.approx(0.0, abs=0.5)
