"""The contract of a protocol front end: one simulated device served over its protocol.

A front end serves the points of one mapping-file device from the shared `Microgrid`
through `self.values` (`fwsim.points.PointValues`): reads are engineering values in the
point's unit (the front end applies the inverse of the point's scale/offset), writes go
back through it to the model.
The simulator and the gateway read the same mapping file, so they cannot drift.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fwsim.physics import Microgrid
from fwsim.points import PointValues
from gateway.mapping import Device
from gateway.protocols import spec_for
from gateway.protocols.base import load_class


class FrontEnd(ABC):
    def __init__(self, device: Device, grid: Microgrid, host: str, port: int) -> None:
        self.device = device
        self.grid = grid
        self.values = PointValues(grid)
        self.host = host
        self.port = port

    @abstractmethod
    async def start(self) -> None:
        """Listen on (host, port), or open `device.connection.serial` for a serial device
        (host and port unused); return once requests are served."""

    @abstractmethod
    async def refresh(self) -> None:
        """Copy the current model values into the served data model (called each tick)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop serving; never raises."""


def create_front_end(device: Device, grid: Microgrid, host: str, port: int) -> FrontEnd:
    target = spec_for(device.protocol).front_end
    if target is None:
        raise ValueError(f"device {device.id!r}: no simulator for protocol {device.protocol!r}")
    front = load_class(target)(device, grid, host, port)
    assert isinstance(front, FrontEnd)
    return front
