"""Readings and commands: the values that cross the driver contract.

Quality follows IEC 61850 (validity good / invalid / questionable plus detail flags), so
every protocol's quality bits map onto one shape.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Validity(enum.StrEnum):
    GOOD = "good"
    INVALID = "invalid"
    QUESTIONABLE = "questionable"


class QualityFlag(enum.StrEnum):
    """Detail flags in the spirit of IEC 61850 DetailQual and the 104 quality descriptor."""

    OVERFLOW = "overflow"
    OLD = "old"  # value not refreshed (104 NT, 61850 oldData)
    SUBSTITUTED = "substituted"  # 104 SB, 61850 source=substituted
    BLOCKED = "blocked"  # 104 BL, 61850 operatorBlocked
    INCONSISTENT = "inconsistent"
    FAILURE = "failure"  # device reported a failure / exception for this point
    COMM_FAILURE = "comm_failure"  # the gateway could not reach the device
    OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True, slots=True)
class Quality:
    validity: Validity = Validity.GOOD
    flags: frozenset[QualityFlag] = frozenset()

    @property
    def good(self) -> bool:
        return self.validity is Validity.GOOD

    @classmethod
    def invalid(cls, *flags: QualityFlag) -> Quality:
        return cls(Validity.INVALID, frozenset(flags))

    @classmethod
    def questionable(cls, *flags: QualityFlag) -> Quality:
        return cls(Validity.QUESTIONABLE, frozenset(flags))

    def __str__(self) -> str:
        if not self.flags:
            return self.validity.value
        return f"{self.validity.value}[{','.join(sorted(f.value for f in self.flags))}]"


GOOD = Quality()

Value = float | int | bool | None


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point as the gateway received it.

    `value` is in engineering units (scale and offset applied) or None when the device gave
    no usable value. `source_time` is the device's timestamp when the protocol carries one.
    """

    point: str
    value: Value
    unit: str
    quality: Quality = GOOD
    source_time: datetime | None = None
    gateway_time: datetime = field(default_factory=utcnow)
    detail: str = ""  # why the quality is not good, for operators

    def __post_init__(self) -> None:
        if not self.point:
            raise ValueError("reading without point id")
        if isinstance(self.value, float) and not math.isfinite(self.value) and self.quality.good:
            raise ValueError(f"point {self.point!r}: non-finite value {self.value} marked good")


class _Building:
    """A Reading under construction: the same slots, writable. `good_reading` sets them
    with plain attribute stores and then makes the object the Reading it is; a frozen
    dataclass's __init__ goes through object.__setattr__ once per field, and setting the
    slots through their descriptors costs a call each, together four and two times this."""

    __slots__ = Reading.__slots__


_new = object.__new__


def good_reading(point: str, value: float | int, unit: str, gateway_time: datetime) -> Reading:
    """A good reading without a source time, for a driver's per-point path (one per point
    per poll). The caller guarantees what `Reading` checks when built: a point id (from
    the mapping) and a finite value."""
    reading: Any = _new(_Building)
    reading.point = point
    reading.value = value
    reading.unit = unit
    reading.quality = GOOD
    reading.source_time = None
    reading.gateway_time = gateway_time
    reading.detail = ""
    reading.__class__ = Reading  # the same layout: only the type changes
    built: Reading = reading
    return built


class CommandMode(enum.StrEnum):
    DIRECT = "direct"
    SELECT_BEFORE_OPERATE = "sbo"


@dataclass(frozen=True, slots=True)
class Command:
    """A request to set a point. `deadline` bounds how long the write may take in total."""

    point: str
    value: float | int | bool
    mode: CommandMode = CommandMode.DIRECT
    origin: str = "operator"
    deadline: datetime | None = None

    def __post_init__(self) -> None:
        if not self.point:
            raise ValueError("command without point id")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError(f"point {self.point!r}: non-finite command value {self.value}")


class CommandStatus(enum.StrEnum):
    CONFIRMED = "confirmed"  # device acknowledged the write (positive confirmation)
    REJECTED = "rejected"  # device refused (exception, negative confirmation, AddCause)
    TIMEOUT = "timeout"  # no answer before the deadline
    LINK_DOWN = "link_down"


@dataclass(frozen=True, slots=True)
class CommandResult:
    command: Command
    status: CommandStatus
    detail: str = ""
    completed_at: datetime = field(default_factory=utcnow)

    @property
    def ok(self) -> bool:
        return self.status is CommandStatus.CONFIRMED
