"""The four information objects of the Conditional Re-Profiling use case.

All values refer to the point of common coupling (PCC) of the microgrid, in kW and kvar,
with the gateway's sign convention: P > 0 imports from the grid. Profiles are equidistant
intervals from `start`, one every `step` (15 min by default, like the imbalance settlement
period). Each object carries the message id, sender, generation time and the id of the
microgrid it concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter

from gateway.smartapi.messages import (
    Message,
    check_all_finite,
    check_finite,
    check_id,
    check_time,
)

DEFAULT_STEP = timedelta(minutes=15)
#: RDF statements of a profile message, signed: at most this many per interval (a
#: forecast's, the largest) and around them (header, microgrid, proof)
STATEMENTS_PER_INTERVAL = 13
STATEMENTS_AROUND = 120


def statements_for(intervals: int) -> int:
    """The most RDF statements a signed profile message of `intervals` intervals holds."""
    return STATEMENTS_PER_INTERVAL * intervals + STATEMENTS_AROUND


#: an interval class's field names, and one C call that reads them all (several fields:
#: attrgetter gives a tuple)
_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[object], tuple[object, ...]]]] = {}


def _finite(obj: object) -> None:
    cls = type(obj)
    fields = _FIELDS.get(cls)
    if fields is None:
        names = tuple(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        assert len(names) > 1
        fields = _FIELDS[cls] = (names, attrgetter(*names))
    check_all_finite(fields[0], fields[1](obj))


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexMessage(Message):
    #: id of the microgrid (the gateway config's microgrid.id)
    microgrid: str

    def __post_init__(self) -> None:
        Message.__post_init__(self)
        check_id("microgrid", self.microgrid)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileMessage(FlexMessage):
    start: datetime
    step: timedelta = DEFAULT_STEP

    def __post_init__(self) -> None:
        FlexMessage.__post_init__(self)
        object.__setattr__(self, "start", check_time("start", self.start))
        if self.step <= timedelta(0):
            raise ValueError(f"interval step {self.step} is not positive")

    def _check_intervals(self, intervals: Sequence[object]) -> None:
        if not intervals:
            raise ValueError("a profile needs at least one interval")

    def interval_start(self, index: int) -> datetime:
        return self.start + self.step * index


@dataclass(frozen=True, slots=True)
class ForecastInterval:
    """Baseline PQ at the PCC and the range the microgrid can hold it in (min <= base <= max)."""

    p_kw: float
    p_min_kw: float
    p_max_kw: float
    q_kvar: float
    q_min_kvar: float
    q_max_kvar: float

    def __post_init__(self) -> None:
        _finite(self)
        if not self.p_min_kw <= self.p_kw <= self.p_max_kw:
            raise ValueError(f"P range {self.p_min_kw}..{self.p_max_kw} excludes {self.p_kw}")
        if not self.q_min_kvar <= self.q_kvar <= self.q_max_kvar:
            raise ValueError(f"Q range {self.q_min_kvar}..{self.q_max_kvar} excludes {self.q_kvar}")

    # named by what they do at the coupling point (the wire's ReservedUp/ReservedDown),
    # unlike the flexibility functions' balancing-sense P up/down (gateway.flex.model)
    @property
    def p_raise_kw(self) -> float:
        return self.p_max_kw - self.p_kw

    @property
    def p_lower_kw(self) -> float:
        return self.p_kw - self.p_min_kw

    @property
    def q_raise_kvar(self) -> float:
        return self.q_max_kvar - self.q_kvar

    @property
    def q_lower_kvar(self) -> float:
        return self.q_kvar - self.q_min_kvar


@dataclass(frozen=True, slots=True, kw_only=True)
class FlexibilityForecast(ProfileMessage):
    """MGMS -> AMS: per interval the baseline PQ profile and the limits of adjustment."""

    intervals: tuple[ForecastInterval, ...]

    def __post_init__(self) -> None:
        ProfileMessage.__post_init__(self)
        self._check_intervals(self.intervals)


@dataclass(frozen=True, slots=True)
class ReservedInterval:
    """The purchased band: how far the microgrid must be able to raise and lower its
    coupling-point P and Q from the baseline in this interval (all >= 0); on the wire
    `ReservedUp` (raise) and `ReservedDown` (lower)."""

    p_raise_kw: float
    p_lower_kw: float
    q_raise_kvar: float = 0.0
    q_lower_kvar: float = 0.0

    def __post_init__(self) -> None:
        _finite(self)
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 0:
                raise ValueError(f"reserved {name} is negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReserveNotification(ProfileMessage):
    """AMS -> MGMS: the reserve purchased on the market, per interval."""

    #: the market's identifier of the purchase (clearing result / accepted bid)
    purchase: str
    intervals: tuple[ReservedInterval, ...]

    def __post_init__(self) -> None:
        ProfileMessage.__post_init__(self)
        check_id("purchase", self.purchase)
        self._check_intervals(self.intervals)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReserveActivation(FlexMessage):
    """AMS -> MGMS: real-time PQ set point at the PCC from `start`, until `end` if given."""

    #: message id of the Reserve Notification this activation draws on
    notification: str
    p_kw: float
    q_kvar: float
    start: datetime
    end: datetime | None = None

    def __post_init__(self) -> None:
        FlexMessage.__post_init__(self)
        check_id("notification", self.notification)
        check_finite("p_kw", self.p_kw)
        check_finite("q_kvar", self.q_kvar)
        object.__setattr__(self, "start", check_time("start", self.start))
        if self.end is not None:
            object.__setattr__(self, "end", check_time("end", self.end))
            if self.end <= self.start:
                raise ValueError(f"activation ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True, slots=True)
class VerificationInterval:
    """What was asked and what happened at the PCC in one interval.

    delivered = measured - baseline; percent = 100 * delivered / (set - baseline), as the
    verification function computed it (it decides the case set == baseline).
    """

    p_set_kw: float
    p_baseline_kw: float
    p_measured_kw: float
    p_delivered_kw: float
    p_percent: float
    q_set_kvar: float = 0.0
    q_baseline_kvar: float = 0.0
    q_measured_kvar: float = 0.0
    q_delivered_kvar: float = 0.0
    q_percent: float = 100.0

    def __post_init__(self) -> None:
        _finite(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReserveVerification(ProfileMessage):
    """MGMS -> AMS: per interval set, baseline, measured, delivered and percent delivered."""

    #: message id of the Reserve Activation being verified
    activation: str
    intervals: tuple[VerificationInterval, ...]

    def __post_init__(self) -> None:
        ProfileMessage.__post_init__(self)
        check_id("activation", self.activation)
        self._check_intervals(self.intervals)


InformationObject = (
    FlexibilityForecast | ReserveNotification | ReserveActivation | ReserveVerification
)
