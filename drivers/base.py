"""The driver contract: what every protocol adapter offers the gateway.

A driver serves one device of a mapping file. It connects, reads a set of that device's
points, writes one command, optionally pushes spontaneous readings, and closes.

A periodic poll goes through `poll`, which may hand the values over as `Batch`es (one
object for a block of points decoded at once, with one time and one quality) besides
Readings; by default it is `read`. `read` gives one Reading per point, for callers that
want them (tools, tests); a driver that batches makes its `read` from its `poll`.

Errors: a link failure (refused, reset, timeout) raises `LinkError` from `connect` or
`read`, and the caller reconnects with capped exponential backoff. A point the device
refuses or that does not decode is never an exception: it comes back as a Reading with
invalid quality and a `detail`, so one bad point never fails the batch. `write` reports
the device's answer as a `CommandResult`; limit checks happen in the gateway before it.
Protocol library exceptions never leave a driver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from pydantic import BaseModel

from gateway.mapping import Device, Point
from gateway.model import Batch, Command, CommandResult, Quality, QualityFlag, Reading, Value
from gateway.protocols import Address

ReadingSink = Callable[[Reading], None]
"""Receives spontaneous readings on the event loop thread; must not block."""


class Driver(ABC):
    def __init__(self, device: Device) -> None:
        self.device = device

    @abstractmethod
    async def connect(self) -> None:
        """Open the link; raise LinkError when the device cannot be reached."""

    @abstractmethod
    async def read(self, points: Sequence[Point]) -> list[Reading]:
        """One reading per requested point, in order; raise LinkError if the link fails."""

    async def poll(self, points: Sequence[Point]) -> Sequence[Reading | Batch]:
        """The values of `points` for the point table: batches and readings, each point
        once; raise LinkError if the link fails. By default `read`'s readings."""
        return await self.read(points)

    @abstractmethod
    async def write(self, point: Point, command: Command) -> CommandResult:
        """Send one command (value in engineering units) and report the device's answer."""

    def read_budget(self, points: Sequence[Point]) -> float:
        """Seconds a read of `points` may take on a healthy link; a caller that waits
        longer may declare the link dead. Drivers whose reads take several requests
        (a slow serial line, many units) say more."""
        return self.device.timeout * 2 + 1

    async def subscribe(self, sink: ReadingSink) -> bool:
        """Start pushing spontaneous readings to `sink`; False if the protocol has none."""
        return False

    @abstractmethod
    async def close(self) -> None:
        """Close the link; never raises."""

    @property
    def connected(self) -> bool:
        return False


AddressT = TypeVar("AddressT", bound=Address)
OptionsT = TypeVar("OptionsT", bound=BaseModel)


class ProtocolDriver(Driver, Generic[AddressT, OptionsT]):
    """A driver typed by its protocol's address and options models. The device's parsed
    options and each point's address are checked against them here, once, so the
    protocol's own code reads them typed."""

    def __init__(
        self,
        device: Device,
        address_type: type[AddressT],
        options_type: type[OptionsT],
        options: OptionsT | None = None,
    ) -> None:
        """`options` overrides the device's."""
        super().__init__(device)
        typed = device.typed_options if options is None else options
        if not isinstance(typed, options_type):
            raise TypeError(
                f"device {device.id!r}: options are {type(typed).__name__},"
                f" not {options_type.__name__} (protocol {device.protocol!r})"
            )
        self.options: OptionsT = typed
        self._address_type = address_type
        self._typed: dict[str, AddressT] = {}

    def address(self, point: Point) -> AddressT:
        """The point's typed address (parsed by the loader)."""
        found = self._typed.get(point.id)
        if found is None:
            parsed = self.device.address_of(point.id)
            if not isinstance(parsed, self._address_type):
                raise TypeError(
                    f"device {self.device.id!r}, point {point.id!r}: address {parsed} is"
                    f" {type(parsed).__name__}, not {self._address_type.__name__}"
                )
            found = self._typed[point.id] = parsed
        return found


def to_engineering(point: Point, raw: float | int | bool) -> Value:
    """Raw protocol value to engineering units (raw * scale + offset); bools pass through."""
    if isinstance(raw, bool):
        return raw
    if point.scale == 1.0 and point.offset == 0.0:
        return raw
    return raw * point.scale + point.offset


def to_raw(point: Point, value: float | int | bool) -> float | bool:
    """Engineering value to the raw protocol value, the inverse of `to_engineering`."""
    if isinstance(value, bool):
        return value
    return (value - point.offset) / point.scale


def invalid(point: Point, detail: str, *flags: QualityFlag) -> Reading:
    """A reading that says why a point has no value."""
    return Reading(
        point=point.id,
        value=None,
        unit=point.unit,
        quality=Quality.invalid(*(flags or (QualityFlag.FAILURE,))),
        detail=detail,
    )
