"""Smart API messages as frozen typed objects: Request, Response, Notification and Error,
with Activities (Read/Write) on entities that carry value objects and time series.

Objects are validated when built, so a message that exists is a message the codec can emit:
ids are safe tokens, times are timezone-aware UTC, numbers are finite and every unit fits
its quantity kind.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.model import Quality, QualityFlag, Validity
from gateway.smartapi.vocab import EntityKind, QuantityKind, unit_fits
from gateway.units import UNITS

#: lexical forms the model enforces: the fast check (check.py) and the shapes (shapes.py)
#: take them from here, so the three agree
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:~\-]{0,127}$"
#: an xsd:dateTime must carry its UTC offset
TZ_PATTERN = r"(Z|[+\-][0-9][0-9]:[0-9][0-9])$"
_FLAG = f"({'|'.join(f.value for f in QualityFlag)})"
#: `str(Quality)`: validity, then the flags in brackets
QUALITY_PATTERN = rf"^({'|'.join(v.value for v in Validity)})(\[{_FLAG}(,{_FLAG})*\])?$"

_ID = re.compile(ID_PATTERN)
_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")

Scalar = float | int | bool


def new_message_id() -> str:
    return str(uuid.uuid4())


def check_id(what: str, value: str) -> None:
    if not _ID.match(value):
        raise ValueError(f"{what} {value!r} is not a token of 1-128 [A-Za-z0-9._:~-]")


def check_iri(what: str, value: str) -> None:
    if not _IRI.match(value):
        raise ValueError(f"{what} {value!r} is not an absolute IRI")


def check_time(what: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} has no timezone")
    return value.astimezone(UTC)


def check_finite(what: str, value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is not finite: {value}")


def check_all_finite(names: Sequence[str] | None, values: Sequence[object]) -> None:
    """check_finite of each value (named by `names`, else "value <i>"): numbers tested in
    one C loop, the offender named only when there is one."""
    try:
        if all(map(math.isfinite, values)):  # type: ignore[arg-type]
            return
    except (TypeError, OverflowError):
        pass  # not all floats (or an int beyond them): judged one by one below
    for i, value in enumerate(values):
        check_finite(names[i] if names is not None else f"value {i}", value)


def _utc(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if value is not None:
        object.__setattr__(obj, name, check_time(name, value))


class Method(enum.StrEnum):
    READ = "Read"
    WRITE = "Write"


class SeriesRole(enum.StrEnum):
    """What the values of a time series mean (product namespace `mgms:`)."""

    BASELINE = "Baseline"
    MAXIMUM = "Maximum"
    MINIMUM = "Minimum"
    RESERVED_UP = "ReservedUp"
    RESERVED_DOWN = "ReservedDown"
    SET_POINT = "SetPoint"
    MEASURED = "Measured"
    DELIVERED = "Delivered"
    DELIVERED_PERCENT = "DeliveredPercent"


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueObject:
    """One value (or, in a Read request, one wanted quantity) of an entity.

    `point` and `role` name the gateway point and its semantic role when the value comes
    from (or goes to) a mapped point.
    """

    quantity: QuantityKind | None = None
    unit: str | None = None
    value: Scalar | None = None
    point: str | None = None
    role: str | None = None
    quality: Quality | None = None
    time: datetime | None = None

    def __post_init__(self) -> None:
        if self.unit is not None and self.unit not in UNITS:
            raise ValueError(f"unknown unit {self.unit!r}")
        if (
            self.quantity is not None
            and self.unit is not None
            and not unit_fits(self.quantity, self.unit)
        ):
            raise ValueError(f"unit {self.unit} does not fit quantity {self.quantity}")
        if self.value is not None and self.unit is None:
            raise ValueError("a value needs a unit")
        check_finite("value", self.value)
        if self.point is not None:
            check_id("point", self.point)
        _utc(self, "time")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSeries:
    """Equidistant values from `start`, one every `step`."""

    quantity: QuantityKind
    unit: str
    start: datetime
    step: timedelta
    values: tuple[float, ...]
    role: SeriesRole | None = None
    #: for a series in percent: the quantity kind it is a percentage of
    of: QuantityKind | None = None

    def __post_init__(self) -> None:
        if not unit_fits(self.quantity, self.unit):
            raise ValueError(f"unit {self.unit} does not fit quantity {self.quantity}")
        if self.step <= timedelta(0):
            raise ValueError(f"time step {self.step} is not positive")
        if not self.values:
            raise ValueError("a time series needs at least one value")
        check_all_finite(None, self.values)
        _utc(self, "start")

    @property
    def end(self) -> datetime:
        return self.start + self.step * len(self.values)


def _vo_key(vo: ValueObject) -> tuple[str, ...]:
    return (
        vo.point or "",
        vo.role or "",
        vo.quantity or "",
        vo.unit or "",
        repr(vo.value),
        str(vo.quality),
        vo.time.isoformat() if vo.time else "",
    )


def _ts_key(ts: TimeSeries) -> tuple[str, ...]:
    return (ts.role or "", ts.quantity, ts.of or "", ts.unit, ts.start.isoformat(), str(ts.step))


def _activity_key(a: Activity) -> tuple[str, ...]:
    return (a.method, *(e.iri for e in a.entities), repr(a.start), repr(a.end), repr(a))


def _sort_activities(msg: object) -> None:
    activities = msg.activities  # type: ignore[attr-defined]
    object.__setattr__(msg, "activities", tuple(sorted(activities, key=_activity_key)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Entity:
    iri: str
    kinds: frozenset[EntityKind] = frozenset()
    identifier: str | None = None
    name: str | None = None
    value_objects: tuple[ValueObject, ...] = ()
    time_series: tuple[TimeSeries, ...] = ()
    parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_iri("entity", self.iri)
        # RDF keeps no order among repeated properties: hold them in one canonical order
        object.__setattr__(self, "value_objects", tuple(sorted(self.value_objects, key=_vo_key)))
        object.__setattr__(self, "time_series", tuple(sorted(self.time_series, key=_ts_key)))
        object.__setattr__(self, "parts", tuple(sorted(self.parts)))
        for part in self.parts:
            check_iri("part", part)


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    method: Method
    entities: tuple[Entity, ...]
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if not self.entities:
            raise ValueError("an activity needs at least one entity")
        object.__setattr__(self, "entities", tuple(sorted(self.entities, key=lambda e: e.iri)))
        _utc(self, "start")
        _utc(self, "end")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"activity ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: str
    sender: str
    generated_at: datetime

    def __post_init__(self) -> None:
        check_id("message id", self.id)
        check_iri("sender", self.sender)
        _utc(self, "generated_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(Message):
    activities: tuple[Activity, ...]

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        if not self.activities:
            raise ValueError("a request needs at least one activity")
        _sort_activities(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Response(Message):
    activities: tuple[Activity, ...] = ()
    in_reply_to: str | None = None

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        if self.in_reply_to is not None:
            check_id("in reply to", self.in_reply_to)
        _sort_activities(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification(Message):
    activities: tuple[Activity, ...]

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        if not self.activities:
            raise ValueError("a notification needs at least one activity")
        _sort_activities(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage(Message):
    """A Smart API Error: `code` follows HTTP status semantics, `message` says why."""

    code: int
    message: str
    in_reply_to: str | None = None

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        if not 100 <= self.code <= 999:
            raise ValueError(f"error code {self.code} out of range")
        if not self.message:
            raise ValueError("an error needs a message")
        if self.in_reply_to is not None:
            check_id("in reply to", self.in_reply_to)
