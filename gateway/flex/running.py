"""The activation in force, as activation and control, verification and recovery share it,
and its baseline as the records keep it (JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.flex.dispatch import Dispatch
from gateway.flex.intervals import Horizon
from gateway.flex.model import Activation, ActivationDecision, Reservation
from gateway.flex.verify import Baseline, Setpoint


@dataclass
class Running:
    """The activation in force."""

    activation: Activation
    reservation: Reservation | None
    baseline: Baseline
    decision: ActivationDecision
    #: event-loop time at which its set points were due (decided, or its start if later);
    #: None once they were written (or for one resumed after a restart)
    due: float | None = None
    setpoints: list[Setpoint] = field(default_factory=list)
    #: distributed DERs that received their target (supervised from then on)
    targeted: dict[str, float] = field(default_factory=dict)
    verified_until: datetime | None = None
    cycles: int = 0
    supervised_notes: set[str] = field(default_factory=set)
    last: Dispatch | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def end(self) -> datetime | None:
        """When it ends: its own end, cut at its reservation's."""
        end = self.activation.end
        if self.reservation is not None:
            end = self.reservation.end if end is None else min(end, self.reservation.end)
        return end


def baseline_to_json(b: Baseline) -> dict[str, Any]:
    return {
        "start": b.horizon.start.isoformat(),
        "step_s": b.horizon.step.total_seconds(),
        "p": list(b.p_kw),
        "q": list(b.q_kvar),
    }


def baseline_from_json(raw: dict[str, Any]) -> Baseline:
    h = Horizon(
        datetime.fromisoformat(raw["start"]), timedelta(seconds=raw["step_s"]), len(raw["p"])
    )
    return Baseline(h, tuple(raw["p"]), tuple(raw["q"]))
