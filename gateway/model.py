"""Readings and commands: the values that cross the driver contract.

Quality follows IEC 61850 (validity good / invalid / questionable plus detail flags), so
every protocol's quality bits map onto one shape.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime


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

    # a reading is the batch of its one point (see `Batch`): the point table and the store
    # take both one way, without a Batch made per reading

    @property
    def points(self) -> PointSet:
        return PointSet.single(self.point, self.unit)

    @property
    def values(self) -> tuple[Value]:
        return (self.value,)

    def reading(self, point: str) -> Reading:
        if point != self.point:
            raise KeyError(point)
        return self

    def readings(self) -> list[Reading]:
        return [self]


@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class PointSet:
    """The points of a `Batch`, in order, with the unit of each one's value. A driver builds
    one per block of its read plan and hands the same object with every poll, so who takes
    batches works out once per set (by identity: `eq=False`) what it needs of its points."""

    ids: tuple[str, ...]
    units: tuple[str, ...]
    #: each id's position
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.units):
            raise ValueError(f"{len(self.ids)} point ids with {len(self.units)} units")
        object.__setattr__(self, "index", {point: i for i, point in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    @functools.lru_cache(maxsize=1 << 16)
    def single(point: str, unit: str) -> PointSet:
        """The set of one point (one object per point and unit, as a driver's block is
        one object every poll)."""
        return PointSet((point,), (unit,))


@dataclass(frozen=True, slots=True)
class Batch:
    """Values of the points of a `PointSet` read together (a decoded register block), with
    one gateway time, one quality, one source time and one detail: the readings of a poll
    without an object per point. `reading` builds a point's Reading when one is asked for.
    A Reading offers the same view (`points`, `values`, ...) as the batch of one point.

    The maker guarantees what a Reading checks when built: a good batch holds finite values
    only (a driver checks its block at once, not point by point)."""

    points: PointSet
    values: Sequence[Value]
    gateway_time: datetime
    quality: Quality = GOOD
    source_time: datetime | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if len(self.values) != len(self.points.ids):
            raise ValueError(
                f"batch of {len(self.points.ids)} points carries {len(self.values)} values"
            )

    def __len__(self) -> int:
        return len(self.values)

    def reading(self, point: str) -> Reading:
        """The reading of one of the batch's points (KeyError if it has none)."""
        at = self.points.index[point]
        return Reading(
            point,
            self.values[at],
            self.points.units[at],
            self.quality,
            self.source_time,
            self.gateway_time,
            self.detail,
        )

    def readings(self) -> list[Reading]:
        """The reading of every point, in order."""
        return [self.reading(point) for point in self.points.ids]


Acquired = Batch | Reading
"""What a driver hands over: a batch, or a reading (the batch of one point); both read the
same way (`points`, `values`, `quality`, ...)."""


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
