"""The flexibility functions' own messages: reservations, activations, forecasts, decisions
and verifications, as validated frozen dataclasses. The Smart API codec translates its
message model to and from these.

Conventions: power in kW / kvar, energy in kWh. Coupling-point P > 0 imports from the grid.
*Up* flexibility lowers the coupling-point P (more generation or less consumption inside
the microgrid), *down* flexibility raises it. Q up raises the coupling-point Q.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _finite(owner: str, **values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{owner}: {name} is not a finite number ({value})")


def _aware(owner: str, **times: datetime | None) -> None:
    for name, t in times.items():
        if t is not None and t.tzinfo is None:
            raise ValueError(f"{owner}: {name} must be timezone-aware")


@dataclass(frozen=True)
class Band:
    """The reserved flexibility of one interval, relative to the baseline."""

    start: datetime
    end: datetime
    p_up_kw: float = 0.0
    p_down_kw: float = 0.0
    q_up_kvar: float = 0.0
    q_down_kvar: float = 0.0

    def __post_init__(self) -> None:
        owner = f"band {self.start.isoformat()}"
        _aware(owner, start=self.start, end=self.end)
        if self.end <= self.start:
            raise ValueError(f"{owner}: end is not after start")
        amounts = {
            "p_up_kw": self.p_up_kw,
            "p_down_kw": self.p_down_kw,
            "q_up_kvar": self.q_up_kvar,
            "q_down_kvar": self.q_down_kvar,
        }
        _finite(owner, **amounts)
        for name, value in amounts.items():
            if value < 0:
                raise ValueError(f"{owner}: {name} is negative ({value})")


@dataclass(frozen=True)
class Reservation:
    """A Reserve Notification: the purchased band per interval for one service."""

    id: str
    bands: tuple[Band, ...]
    service: str = "CRP"

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("reservation without id")
        if not self.bands:
            raise ValueError(f"reservation {self.id!r}: no bands")
        for a, b in zip(self.bands, self.bands[1:], strict=False):
            if b.start < a.end:
                raise ValueError(
                    f"reservation {self.id!r}: band at {b.start.isoformat()} overlaps or is "
                    "out of order"
                )

    @property
    def start(self) -> datetime:
        return self.bands[0].start

    @property
    def end(self) -> datetime:
        return self.bands[-1].end

    def band_at(self, t: datetime) -> Band | None:
        return next((b for b in self.bands if b.start <= t < b.end), None)


@dataclass(frozen=True)
class Activation:
    """A Reserve Activation: coupling-point set points from `start`, until `end` if given."""

    id: str
    start: datetime
    end: datetime | None = None
    p_kw: float | None = None
    q_kvar: float | None = None
    reservation_id: str | None = None

    def __post_init__(self) -> None:
        owner = f"activation {self.id!r}"
        if not self.id:
            raise ValueError("activation without id")
        _aware(owner, start=self.start, end=self.end)
        _finite(owner, p_kw=self.p_kw, q_kvar=self.q_kvar)
        if self.p_kw is None and self.q_kvar is None:
            raise ValueError(f"{owner}: neither P nor Q set point")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"{owner}: end is not after start")

    def active_at(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True)
class FlexInterval:
    """One interval of a Flexibility Forecast at the coupling point."""

    start: datetime
    end: datetime
    baseline_p_kw: float
    baseline_q_kvar: float
    p_min_kw: float
    p_max_kw: float
    q_min_kvar: float
    q_max_kvar: float

    def __post_init__(self) -> None:
        owner = f"forecast interval {self.start.isoformat()}"
        _finite(
            owner,
            baseline_p_kw=self.baseline_p_kw,
            baseline_q_kvar=self.baseline_q_kvar,
            p_min_kw=self.p_min_kw,
            p_max_kw=self.p_max_kw,
            q_min_kvar=self.q_min_kvar,
            q_max_kvar=self.q_max_kvar,
        )
        if not self.p_min_kw <= self.baseline_p_kw + 1e-6 <= self.p_max_kw + 2e-6:
            raise ValueError(f"{owner}: baseline P outside its own limits")

    @property
    def p_up_kw(self) -> float:
        return self.baseline_p_kw - self.p_min_kw

    @property
    def p_down_kw(self) -> float:
        return self.p_max_kw - self.baseline_p_kw

    @property
    def q_up_kvar(self) -> float:
        return self.q_max_kvar - self.baseline_q_kvar

    @property
    def q_down_kvar(self) -> float:
        return self.baseline_q_kvar - self.q_min_kvar


@dataclass(frozen=True)
class FlexForecast:
    """The flexibility functions' forecast (balancing-sense P up/down); flex/messages.py
    turns it into the Smart API Flexibility Forecast message."""

    microgrid: str
    generated_at: datetime
    intervals: tuple[FlexInterval, ...]


class DecisionStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    CURTAILED = "curtailed"  # accepted in part; `reasons` says what limited it
    REFUSED = "refused"


class ReasonCode(enum.StrEnum):
    RESERVE = "reserve"  # another reserved service needs the capacity
    COUPLING_POINT = "coupling_point"  # coupling-point import/export/reactive limit
    INTERNAL_LIMIT = "internal_limit"  # a line or transformer inside the microgrid
    DER_LIMIT = "der_limit"  # a DER's power rating or availability
    ENERGY = "energy"  # a storage's energy window (SOC) or an EV's energy need
    REACTIVE = "reactive"  # reactive capability of the DERs
    RAMP = "ramp"
    BAND = "band"  # outside the reserved band
    NO_RESERVATION = "no_reservation"
    PERIOD = "period"  # outside the reservation period
    CONTROL = "control"  # a set point could not be written


@dataclass(frozen=True)
class Reason:
    """Why something was curtailed or refused; `subject` names the service, limit or DER."""

    code: ReasonCode
    subject: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class NotificationDecision:
    reservation_id: str
    status: DecisionStatus
    #: the part accepted (same intervals, bands possibly reduced); None when refused
    accepted: Reservation | None
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class ActivationDecision:
    activation_id: str
    status: DecisionStatus
    #: the coupling-point set points that will be pursued (None: not activated)
    p_kw: float | None
    q_kvar: float | None
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class VerifiedInterval:
    """One interval of a Reserve Verification (see docs/flexibility.md for the formula)."""

    start: datetime
    end: datetime
    #: seconds of the interval the activation covered
    covered_s: float
    set_p_kw: float
    baseline_p_kw: float
    measured_p_kw: float
    requested_kw: float
    delivered_kw: float
    delivered_pct: float | None
    delivered_kwh: float
    #: "energy_counters", "power_samples" or "unmeasured" (no measurement: nothing delivered)
    source: str
    set_q_kvar: float | None = None
    baseline_q_kvar: float | None = None
    measured_q_kvar: float | None = None
    delivered_q_kvar: float | None = None


@dataclass(frozen=True)
class Verification:
    """A Reserve Verification: the ground for payment of one activation."""

    activation_id: str
    reservation_id: str | None
    intervals: tuple[VerifiedInterval, ...]
    final: bool
    note: str = ""
    reasons: tuple[Reason, ...] = field(default_factory=tuple)

    @property
    def delivered_pct(self) -> float | None:
        """Energy-weighted percent delivered over the intervals so far."""
        requested = sum(abs(i.requested_kw) * i.covered_s for i in self.intervals)
        if requested <= 0:
            return None
        delivered = sum(i.delivered_kw * i.covered_s for i in self.intervals)
        return 100.0 * delivered / requested


#: status of a set point recorded before its write was sent, until its result is known
SENDING = "sending"
#: status of a write the gateway stopped in (killed): it may or may not have arrived
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ActivationRecord:
    """An activation as the records keep it: the decision, its baseline (JSON, see
    gateway.flex.running) and whether it is still in force."""

    activation: Activation
    status: str
    p_kw: float | None
    q_kvar: float | None
    reasons: tuple[Reason, ...]
    baseline: dict[str, Any] | None
    state: str
    ended_at: datetime | None
    note: str
