"""The contract every protocol's address model meets, and the registry of protocols."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from gateway.connection import Connection


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


class NoPointFields(BaseModel):
    """The point fields of a protocol that adds none to the protocol-neutral ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PointFieldsT = TypeVar("PointFieldsT", bound=BaseModel)


class PointTyping(BaseModel, Generic[PointFieldsT]):
    """The point fields an address parser needs besides the address string."""

    type: str | None = None
    #: the point's direction ("read", "write", "read-write"), for protocols whose address
    #: differs by direction (IEC 104 names a monitoring and/or a command object)
    direction: str = "read"
    #: select-before-operate requested for the point's commands
    sbo: bool = False
    #: the protocol's own point fields (its spec's `point_fields`; None: none given)
    own: PointFieldsT | None = None


AddressParser = Callable[[str, PointTyping[Any]], Address]
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
    #: the driver class, "module:Class", imported only when a device of the protocol runs
    driver: str | None = None
    #: the simulator front end class, "module:Class" (None: the simulator cannot serve it)
    front_end: str | None = None
    #: the fields a point of this protocol may carry besides the protocol-neutral ones of
    #: `gateway.mapping.Point` (a pydantic model; unknown fields are refused)
    point_fields: type[BaseModel] = NoPointFields


_REGISTRY: dict[str, ProtocolSpec] = {}
#: not empty once the entry points were read
_ENTRY_POINTS_READ: list[str] = []


#: the entry-point group through which every protocol is registered; each entry names a
#: `ProtocolSpec` object, and its name must be the spec's name
ENTRY_POINT_GROUP = "mgms.protocols"


def register(spec: ProtocolSpec) -> ProtocolSpec:
    _REGISTRY[spec.name] = spec
    return spec


def load_entry_points() -> None:
    """Register every protocol of the `mgms.protocols` entry-point group (the installed
    distributions' metadata), the one way a protocol joins the gateway."""
    entries = entry_points(group=ENTRY_POINT_GROUP)
    if not entries:
        # metadata from before the group existed (an old *.egg-info on sys.path shadows it)
        raise RuntimeError(
            f"no protocols in the entry-point group {ENTRY_POINT_GROUP!r}: the installed"
            " package metadata is missing or stale; reinstall (pip install -e .)"
        )
    for entry in entries:
        _register_entry(entry)
    _ENTRY_POINTS_READ.append(ENTRY_POINT_GROUP)


def _register_entry(entry: EntryPoint) -> None:
    spec = entry.load()
    if not isinstance(spec, ProtocolSpec):
        raise TypeError(
            f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}):"
            f" names a {type(spec).__name__}, not a ProtocolSpec"
        )
    if spec.name != entry.name:
        raise ValueError(
            f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}):"
            f" the spec calls itself {spec.name!r}"
        )
    register(spec)


def load_class(target: str) -> type:
    """The class a "module:Class" reference names."""
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not isinstance(cls, type):
        raise TypeError(f"{target} is not a class")
    return cls


def _loaded() -> dict[str, ProtocolSpec]:
    # loaded on first use, not on import: a protocol's own module imports this one
    if not _ENTRY_POINTS_READ:
        load_entry_points()
    return _REGISTRY


def spec_for(protocol: str) -> ProtocolSpec:
    if protocol not in _REGISTRY and not _ENTRY_POINTS_READ:
        # only this protocol's entry: its module imports what the protocol needs (the CEMS
        # Smart API form: rdflib and cryptography), which a site without it never loads
        for entry in entry_points(group=ENTRY_POINT_GROUP, name=protocol):
            _register_entry(entry)
    try:
        return _REGISTRY[protocol]
    except KeyError:
        raise ValueError(
            f"unknown protocol {protocol!r} (known: {', '.join(known_protocols())})"
        ) from None


def known_protocols() -> list[str]:
    return sorted(_loaded())


def read_first_line(path: Path, field: str) -> str:
    """The first line of a secret file named by option `field` (stripped); the error names
    the field and the file, never the content."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{field} {str(path)!r} cannot be read: {exc.__class__.__name__}"
        ) from None
    first = lines[0].strip() if lines else ""
    if not first:
        raise ValueError(f"{field} {str(path)!r} is empty")
    return first


def options_for(protocol: str, raw: dict[str, Any]) -> BaseModel:
    return spec_for(protocol).options_model.model_validate(raw)
