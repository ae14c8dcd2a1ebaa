"""A small real controller over a PointTable for the access tests: it checks the mapping
(unknown point, read-only, limits) and applies the value to the table as a device would."""

from __future__ import annotations

from gateway.errors import LimitViolation, NotWritable, UnknownPoint
from gateway.model import Command, CommandResult, CommandStatus, Reading
from gateway.points import PointTable


class TableController:
    def __init__(self, table: PointTable, refuse: set[str] | None = None) -> None:
        self.table = table
        self.refuse = refuse or set()
        self.sent: list[Command] = []

    async def write(self, command: Command) -> CommandResult:
        mapped = self.table.mapped(command.point)
        if mapped is None:
            raise UnknownPoint(command.point, "no such point")
        point = mapped.point
        if not point.direction.writable:
            raise NotWritable(point.id, "point is read-only")
        if point.limits is not None and not isinstance(command.value, bool):
            problem = point.limits.violation(float(command.value))
            if problem:
                raise LimitViolation(point.id, problem)
        self.sent.append(command)
        if point.id in self.refuse:
            return CommandResult(command, CommandStatus.REJECTED, "device said no")
        self.table.update([Reading(point=point.id, value=command.value, unit=point.unit)])
        return CommandResult(command, CommandStatus.CONFIRMED)
