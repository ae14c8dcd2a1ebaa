"""From DER set points to Commands on the mapped points.

A DER is steered through the point roles of its mapping:
- active_power_setpoint (kW): batteries, generators, EV chargers;
- active_power_limit (percent): a PV ceiling in percent of its rating, or a controllable
  load's curtailment in percent of its demand;
- reactive_power_setpoint (kvar).
Values are converted to the point's unit and clamped to its write limits here, so the
controller's limit check never refuses a flexibility command. Unchanged set points (within
the deadband) are not rewritten. The devices of one batch are written concurrently (one
device's commands in order): an activation waits for its slowest device, not for the sum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from gateway.config import DerType
from gateway.errors import CommandError
from gateway.flex.capability import DerCapability, DerState
from gateway.flex.ports import PointValues
from gateway.mapping import Point, Quantity
from gateway.model import Command, CommandMode, CommandResult, CommandStatus
from gateway.units import from_canonical


class Controller(Protocol):
    """The gateway's write path (gateway.control.Controller); may raise CommandError when it
    refuses a command before sending it."""

    async def write(self, command: Command) -> CommandResult: ...


@dataclass(frozen=True)
class Target:
    """What one DER should do: P (kW, injection) and Q (kvar); None leaves it alone."""

    der: str
    p_kw: float | None
    q_kvar: float | None = None


@dataclass(frozen=True)
class Planned:
    """One command and what it means, for records and operators."""

    der: str
    quantity: Quantity
    command: Command
    #: the DER value it stands for (kW or kvar)
    meaning: float
    note: str = ""


def _point(points: PointValues, der: str, role: Quantity) -> Point | None:
    for mapped in points.find(der, role):
        if mapped.point.direction.writable:
            return mapped.point
    return None


def _in_unit_of(point: Point, value: float) -> float:
    """A kW (kvar) value in the point's own unit, for the command."""
    return from_canonical(value, point.quantity.value, point.unit)


def _clamp(point: Point, value: float) -> tuple[float, str]:
    lim = point.limits
    if lim is None:
        return value, ""
    if lim.min is not None and value < lim.min:
        return lim.min, f"clamped to the write limit {lim.min:g} of {point.id}"
    if lim.max is not None and value > lim.max:
        return lim.max, f"clamped to the write limit {lim.max:g} of {point.id}"
    return value, ""


def _command(point: Point, value: float, origin: str, deadline: datetime | None) -> Command:
    mode = CommandMode.SELECT_BEFORE_OPERATE if point.sbo else CommandMode.DIRECT
    return Command(point.id, round(value, 4), mode, origin, deadline)


def plan_commands(
    cap: DerCapability,
    state: DerState,
    target: Target,
    points: PointValues,
    origin: str,
    deadline: datetime | None = None,
) -> tuple[list[Planned], list[str]]:
    """Commands that realise `target`, and notes on what could not be expressed."""
    out: list[Planned] = []
    notes: list[str] = []
    der = cap.der
    if target.p_kw is not None:
        setpoint = _point(points, der.id, Quantity.ACTIVE_POWER_SETPOINT)
        limit = _point(points, der.id, Quantity.ACTIVE_POWER_LIMIT)
        prefer_limit = der.type in (DerType.PV, DerType.LOAD)
        if setpoint is not None and not (prefer_limit and limit is not None):
            # the loader made sure the set point's unit is a power unit
            value, note = _clamp(setpoint, _in_unit_of(setpoint, target.p_kw))
            cmd = _command(setpoint, value, origin, deadline)
            out.append(Planned(der.id, Quantity.ACTIVE_POWER_SETPOINT, cmd, target.p_kw, note))
        elif limit is not None:
            pct = _limit_percent(cap, state, target.p_kw)
            if pct is None:
                notes.append(f"{der.id}: no rating or demand to express {target.p_kw:.1f} kW")
            else:
                value, note = _clamp(limit, pct)
                cmd = _command(limit, value, origin, deadline)
                out.append(Planned(der.id, Quantity.ACTIVE_POWER_LIMIT, cmd, target.p_kw, note))
        else:
            notes.append(f"{der.id}: no writable active power set point or limit point")
    if target.q_kvar is not None:
        q_point = _point(points, der.id, Quantity.REACTIVE_POWER_SETPOINT)
        if q_point is None:
            notes.append(f"{der.id}: no writable reactive power set point in kvar")
        else:
            value, note = _clamp(q_point, _in_unit_of(q_point, target.q_kvar))
            cmd = _command(q_point, value, origin, deadline)
            out.append(Planned(der.id, Quantity.REACTIVE_POWER_SETPOINT, cmd, target.q_kvar, note))
    return out, notes


def _limit_percent(cap: DerCapability, state: DerState, p_kw: float) -> float | None:
    der = cap.der
    natural = cap.natural_now(state)
    if der.type is DerType.LOAD:
        # P = natural * (1 - curtail/100), natural < 0
        if natural >= -1e-6:
            return 0.0
        return min(max(100.0 * (1.0 - p_kw / natural), 0.0), 100.0)
    rating = der.ratings.p_max_kw
    if rating <= 0:
        return None
    if p_kw >= natural - 1e-3:
        return 100.0  # not curtailed: release the ceiling entirely
    return min(max(100.0 * p_kw / rating, 0.0), 100.0)


class SetpointWriter:
    """Sends DER targets through the controller and remembers what was sent, so an
    unchanged set point is not rewritten every cycle."""

    def __init__(self, controller: Controller, points: PointValues, deadband_kw: float) -> None:
        self._controller = controller
        self._points = points
        self._deadband = deadband_kw
        self._sent: dict[str, float] = {}

    def forget(self, der: str | None = None) -> None:
        """Rewrite next time (after a release or a reconnect)."""
        if der is None:
            self._sent.clear()
        else:
            for key in [k for k in self._sent if k.startswith(f"{der}/")]:
                del self._sent[key]

    async def apply(
        self,
        targets: Mapping[str, Target],
        caps: Mapping[str, DerCapability],
        states: Mapping[str, DerState],
        origin: str,
        now: datetime,
        write_within: timedelta = timedelta(seconds=5),
        force: bool = False,
        before: Callable[[list[Planned]], Awaitable[None]] | None = None,
    ) -> tuple[list[tuple[Planned, CommandResult]], list[str]]:
        """Write what changed; `before` gets every command to be sent (or refused), in the
        order of the results, once, before the first is sent (the flexibility records
        write ahead with it)."""
        notes: list[str] = []
        due: list[tuple[str, Planned]] = []
        for der_id, target in targets.items():
            planned, why = plan_commands(
                caps[der_id], states[der_id], target, self._points, origin, now + write_within
            )
            notes += why
            for item in planned:
                key = f"{der_id}/{item.quantity.value}"
                last = self._sent.get(key)
                if not force and last is not None and abs(last - item.meaning) < self._deadband:
                    continue
                due.append((key, item))
        if before is not None and due:
            await before([item for _, item in due])
        sent = await self._send_by_device([item.command for _, item in due])
        results: list[tuple[Planned, CommandResult]] = []
        for (key, item), result in zip(due, sent, strict=True):
            results.append((item, result))
            if result.ok:
                self._sent[key] = item.meaning
            else:
                self._sent.pop(key, None)
                notes.append(f"{item.command.point}: {result.status.value} {result.detail}")
        return results, notes

    async def _send_by_device(self, commands: list[Command]) -> list[CommandResult]:
        """The results in the order of `commands`; devices concurrently, each device's
        commands one after the other."""
        by_device: dict[str, list[int]] = {}
        for i, command in enumerate(commands):
            mapped = self._points.mapped(command.point)
            device = mapped.device.id if mapped is not None else command.point
            by_device.setdefault(device, []).append(i)
        results: dict[int, CommandResult] = {}

        async def send(indices: list[int]) -> None:
            for i in indices:
                try:
                    results[i] = await self._controller.write(commands[i])
                except CommandError as exc:  # refused before sending: nothing changed
                    results[i] = CommandResult(commands[i], CommandStatus.REJECTED, str(exc))

        async with asyncio.TaskGroup() as group:
            for indices in by_device.values():
                group.create_task(send(indices))
        return [results[i] for i in range(len(commands))]
