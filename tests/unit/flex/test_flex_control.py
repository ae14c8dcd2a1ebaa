from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway.errors import LimitViolation
from gateway.flex.capability import DerCapability, DerState
from gateway.flex.control import Planned, SetpointWriter, Target, plan_commands
from gateway.loader import load_config
from gateway.mapping import Quantity
from gateway.model import Command, CommandMode, CommandResult, CommandStatus
from gateway.points import PointTable
from tests.support.flexsim import FLEX_CONFIG

NOW = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)


@pytest.fixture
def table() -> PointTable:
    return PointTable(load_config(FLEX_CONFIG))


def caps(table: PointTable) -> dict[str, DerCapability]:
    config = load_config(FLEX_CONFIG)
    return {d.id: DerCapability.of(d, table) for d in config.gateway.ders}


def test_battery_gets_kw_and_kvar_set_points_clamped_to_the_write_limits(table: PointTable) -> None:
    c = caps(table)["bess1"]
    planned, notes = plan_commands(c, DerState(), Target("bess1", 20.0, -45.0), table, "flex:a")
    assert not notes
    by_role = {p.quantity: p for p in planned}
    p = by_role[Quantity.ACTIVE_POWER_SETPOINT]
    assert (p.command.point, p.command.value, p.command.origin) == ("bess1.p_set", 20.0, "flex:a")
    assert p.command.mode is CommandMode.DIRECT
    q = by_role[Quantity.REACTIVE_POWER_SETPOINT]
    assert q.command.value == -30.0 and "write limit -30" in q.note  # bess1.q_set allows +-30


def test_pv_ceiling_in_percent_of_its_rating(table: PointTable) -> None:
    c = caps(table)["pv1"]
    state = DerState(p_kw=45.0, available_kw=45.0)
    (cmd,), _ = plan_commands(c, state, Target("pv1", 30.0), table, "x")
    assert (cmd.command.point, cmd.command.value) == ("pv1.limit", 50.0)  # 30 of 60 kW
    (cmd,), _ = plan_commands(c, state, Target("pv1", 45.0), table, "x")
    assert cmd.command.value == 100.0  # not curtailed: the ceiling is lifted entirely


def test_load_curtailment_in_percent_of_its_demand(table: PointTable) -> None:
    c = caps(table)["load1"]
    # measured -40 with 20 % curtailed: demand 50; -30 means 40 % curtailed
    state = DerState(p_kw=-40.0, limit_pct=20.0)
    (cmd,), _ = plan_commands(c, state, Target("load1", -30.0), table, "x")
    assert (cmd.command.point, cmd.command.value) == ("load1.curtail", pytest.approx(40.0))
    (cmd,), _ = plan_commands(c, state, Target("load1", -5.0), table, "x")
    assert cmd.command.value == 60.0 and "write limit 60" in cmd.note


def test_missing_roles_are_named(table: PointTable) -> None:
    c = caps(table)["load1"]
    planned, notes = plan_commands(c, DerState(p_kw=-40.0), Target("load1", None, 5.0), table, "x")
    assert planned == [] and notes == ["load1: no writable reactive power set point in kvar"]


class Recorder:
    def __init__(self, refuse: str | None = None) -> None:
        self.sent: list[Command] = []
        self.refuse = refuse

    async def write(self, command: Command) -> CommandResult:
        if command.point == self.refuse:
            raise LimitViolation(command.point, "value 99 above maximum 60")
        self.sent.append(command)
        return CommandResult(command, CommandStatus.CONFIRMED)


async def test_writer_skips_unchanged_set_points_and_reports_refusals(table: PointTable) -> None:
    rec = Recorder(refuse="pv1.q_set")
    writer = SetpointWriter(rec, table, deadband_kw=0.5)
    c = caps(table)
    states = {k: DerState(p_kw=0.0) for k in c}
    targets = {"bess1": Target("bess1", 10.0), "pv1": Target("pv1", None, 3.0)}
    results, notes = await writer.apply(targets, c, states, "flex:a", NOW)
    assert [p.command.point for p, _ in results] == ["bess1.p_set", "pv1.q_set"]
    assert results[1][1].status is CommandStatus.REJECTED
    assert any("pv1.q_set: rejected" in n for n in notes)
    await writer.apply({"bess1": Target("bess1", 10.3)}, c, states, "flex:a", NOW)
    assert len(rec.sent) == 1  # within the deadband
    await writer.apply({"bess1": Target("bess1", 11.0)}, c, states, "flex:a", NOW)
    await writer.apply({"bess1": Target("bess1", 11.0)}, c, states, "flex:a", NOW, force=True)
    assert [x.value for x in rec.sent] == [10.0, 11.0, 11.0]
    assert all(x.deadline is not None and x.deadline > NOW for x in rec.sent)


class WaitsForOthers(Recorder):
    """Confirms bess1's writes only once pv1's device was written too: a writer that
    sends device after device never gets there."""

    def __init__(self) -> None:
        super().__init__()
        self.pv_written = asyncio.Event()

    async def write(self, command: Command) -> CommandResult:
        if command.point.startswith("pv1."):
            self.pv_written.set()
        else:
            await asyncio.wait_for(self.pv_written.wait(), 5)
        return await super().write(command)


async def test_devices_are_written_concurrently_and_recorded_ahead(table: PointTable) -> None:
    rec = WaitsForOthers()
    writer = SetpointWriter(rec, table, deadband_kw=0.5)
    c = caps(table)
    states = {k: DerState(p_kw=0.0) for k in c}
    targets = {"bess1": Target("bess1", 10.0, 2.0), "pv1": Target("pv1", None, 3.0)}
    intents: list[str] = []

    async def before(items: list[Planned]) -> None:
        assert not rec.sent, "every intent is recorded before the first command goes out"
        intents.extend(item.command.point for item in items)

    results, notes = await writer.apply(targets, c, states, "flex:a", NOW, before=before)
    assert not notes
    order = ["bess1.p_set", "bess1.q_set", "pv1.q_set"]
    assert [p.command.point for p, _ in results] == order == intents
    assert all(r.status is CommandStatus.CONFIRMED for _, r in results)
    # one device's commands in their order
    bess1 = [x.point for x in rec.sent if x.point.startswith("bess1.")]
    assert bess1 == ["bess1.p_set", "bess1.q_set"]


def test_set_points_go_out_in_the_point_unit() -> None:
    config = load_config(FLEX_CONFIG)
    for mapping in config.mappings.values():
        for device in mapping.devices:
            device.points = [
                p.model_copy(update={"unit": "W", "limits": None})
                if p.id == "bess1.p_set"
                else p.model_copy(update={"unit": "VAR", "limits": None})
                if p.id == "bess1.q_set"
                else p
                for p in device.points
            ]
    table = PointTable(config)
    c = {d.id: DerCapability.of(d, table) for d in config.gateway.ders}["bess1"]
    planned, _ = plan_commands(c, DerState(), Target("bess1", 2.5, -1.25), table, "flex:a")
    by_role = {p.quantity: p for p in planned}
    p = by_role[Quantity.ACTIVE_POWER_SETPOINT]
    assert (p.command.value, p.meaning) == (2500.0, 2.5)
    assert by_role[Quantity.REACTIVE_POWER_SETPOINT].command.value == -1250.0
