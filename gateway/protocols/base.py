"""The contract every protocol's address model meets, and the registry of protocols."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from gateway.mapping import Connection


class Address(ABC):
    """A parsed, typed protocol address. Concrete classes are frozen dataclasses."""

    @abstractmethod
    def conflicts_with(self, other: Address) -> bool:
        """True when two points may not share this address (e.g. overlapping registers)."""

    @abstractmethod
    def __str__(self) -> str:
        """The canonical address string, as written in a mapping file."""

    def span(self) -> tuple[Hashable, int, int] | None:
        """(space, first, end) when the address occupies the slots first..end-1 of a
        numbered space (a Modbus unit's table) and can conflict only with addresses whose
        slots overlap its own: the loader then finds overlaps by sorting, not by comparing
        every pair of points. None: compare with every other address."""
        return None


class AddressError(ValueError):
    """An address or typing field is wrong; `field` names the mapping field at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class PointTyping(BaseModel):
    """The point fields an address parser needs besides the address string."""

    type: str | None = None
    word_order: str | None = None
    byte_order: str | None = None
    bit: int | None = None
    #: the point's direction ("read", "write", "read-write"), for protocols whose address
    #: differs by direction (IEC 104 names a monitoring and/or a command object)
    direction: str = "read"
    #: select-before-operate requested for the point's commands
    sbo: bool = False


AddressParser = Callable[[str, PointTyping], Address]
"""Parses an address string; raises AddressError naming the field and the wrong part."""


@dataclass(frozen=True)
class DeviceIssue:
    """A device setting the protocol cannot use, or a point that does not fit the device's
    connection. `field` is dotted from the device (`connection.serial.bytesize`) or, with
    `point`, a field of that point (`address`)."""

    field: str
    message: str
    point: str | None = None


DeviceCheck = Callable[["Connection", Mapping[str, Address]], list[DeviceIssue]]
"""Checks a device's connection against its protocol and its points' parsed addresses."""


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    parse_address: AddressParser
    options_model: type[BaseModel]
    #: data types a point of this protocol may declare (None: the address implies the type)
    data_types: frozenset[str]
    default_port: int | None = None
    #: checks that need the connection and the addresses together (None: nothing to check)
    check_device: DeviceCheck | None = None


_REGISTRY: dict[str, ProtocolSpec] = {}


def register(spec: ProtocolSpec) -> ProtocolSpec:
    _REGISTRY[spec.name] = spec
    return spec


def spec_for(protocol: str) -> ProtocolSpec:
    try:
        return _REGISTRY[protocol]
    except KeyError:
        raise ValueError(
            f"unknown protocol {protocol!r} (known: {', '.join(sorted(_REGISTRY))})"
        ) from None


def known_protocols() -> list[str]:
    return sorted(_REGISTRY)


def options_for(protocol: str, raw: dict[str, Any]) -> BaseModel:
    return spec_for(protocol).options_model.model_validate(raw)
