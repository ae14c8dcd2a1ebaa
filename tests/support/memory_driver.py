"""An in-memory device behind the driver contract, to test the gateway's own logic
(acquisition, reconnects, control) without a protocol. Protocol drivers are tested
against the real simulators in tests/integration."""

from __future__ import annotations

from collections.abc import Sequence

from drivers.base import Driver, invalid
from gateway.errors import LinkError
from gateway.mapping import Device, Point
from gateway.model import Command, CommandResult, CommandStatus, Reading


class MemoryDevice:
    """The 'field device': values by point id, a link that can be cut, refusals."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.link_up = True
        self.refuse: set[str] = set()
        self.connects = 0
        self.reads = 0


class MemoryDriver(Driver):
    def __init__(self, device: Device, field: MemoryDevice) -> None:
        super().__init__(device)
        self.field = field
        self._open = False

    async def connect(self) -> None:
        if not self.field.link_up:
            raise LinkError(self.device.id, "connection refused")
        self.field.connects += 1
        self._open = True

    async def read(self, points: Sequence[Point]) -> list[Reading]:
        if not (self._open and self.field.link_up):
            raise LinkError(self.device.id, "connection reset")
        self.field.reads += 1
        out = []
        for p in points:
            if p.id in self.field.refuse or p.id not in self.field.values:
                out.append(invalid(p, "illegal data address"))
            else:
                out.append(Reading(p.id, self.field.values[p.id], p.unit))
        return out

    async def write(self, point: Point, command: Command) -> CommandResult:
        if not (self._open and self.field.link_up):
            return CommandResult(command, CommandStatus.LINK_DOWN, "not connected")
        if point.id in self.field.refuse:
            return CommandResult(command, CommandStatus.REJECTED, "illegal data address")
        self.field.values[point.id] = float(command.value)
        return CommandResult(command, CommandStatus.CONFIRMED)

    async def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open
