"""What operators see of the flexibility service: its metrics and the status page's view.

`FlexWatch` is the service's observer (gateway.flex.service.FlexObserver): it counts
activations by result, times how long the set points of one took to go out after it was
due, keeps the last verified delivery percentage and a bounded series of set point,
baseline and measured coupling-point power per control cycle for the status page's chart.
The notification in force is read from the service when the page asks.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from gateway.flex.model import Activation, ActivationDecision, DecisionStatus, Verification
from gateway.flex.service import FlexService
from gateway.ops.metrics import Registry
from gateway.ops.status import ActivationView, FlexStatus, NotificationView, SeriesPoint

#: control cycles kept for the chart (at the default 2 s cycle: the last 40 minutes)
SERIES_POINTS = 1200
#: seconds from an activation being due to its first set points written
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

RESULTS = {
    DecisionStatus.ACCEPTED: "applied",
    DecisionStatus.CURTAILED: "curtailed",
    DecisionStatus.REFUSED: "rejected",
}


class FlexWatch:
    def __init__(self, flex: FlexService, metrics: Registry) -> None:
        self._flex = flex
        self._activations = metrics.counter(
            "mgms_activations_total", "Reserve activations decided, by result.", ("result",)
        )
        for result in RESULTS.values():  # every result shows from the start, at 0
            self._activations.inc(0, result=result)
        self._latency = metrics.histogram(
            "mgms_activation_latency_seconds",
            "From an activation being due (received, or its start if later) to its first "
            "set points written and answered by the devices.",
            buckets=LATENCY_BUCKETS,
        )
        self._delivered = metrics.gauge(
            "mgms_verification_delivered_percent",
            "Percent of the requested change delivered in the last verified interval.",
        )
        self._last: Activation | None = None
        self._decision: ActivationDecision | None = None
        self._ended: str | None = None
        self._series: deque[SeriesPoint] = deque(maxlen=SERIES_POINTS)

    # -- FlexObserver ---------------------------------------------------------------------

    def decided(self, act: Activation, decision: ActivationDecision) -> None:
        self._activations.inc(result=RESULTS[decision.status])
        if decision.status is DecisionStatus.REFUSED and self._flex.running is not None:
            return  # the one in force stays on the page; the refusal is in the log
        self._last, self._decision, self._ended = act, decision, None
        self._series.clear()

    def in_force(self, act: Activation, seconds: float) -> None:
        self._latency.observe(seconds)

    def cycled(
        self,
        act: Activation,
        at: datetime,
        setpoint_kw: float | None,
        baseline_kw: float | None,
        measured_kw: float | None,
    ) -> None:
        if self._last is None or act.id != self._last.id:
            return
        self._series.append(SeriesPoint(at, setpoint_kw, baseline_kw, measured_kw))

    def verified(self, verification: Verification) -> None:
        pct = next(
            (
                i.delivered_pct
                for i in reversed(verification.intervals)
                if i.delivered_pct is not None
            ),
            None,
        )
        if pct is not None:
            self._delivered.set(pct)

    def ended(self, act: Activation, at: datetime, summary: str) -> None:
        if self._last is not None and act.id == self._last.id:
            self._ended = summary

    # -- the status page's source -----------------------------------------------------------

    def status(self) -> FlexStatus:
        return FlexStatus(self._notification(), self._activation())

    def _notification(self) -> NotificationView | None:
        now = datetime.now(UTC)
        held = sorted((r for r in self._flex.reservations if r.end > now), key=lambda r: r.start)
        if not held:
            return None
        r = next((r for r in held if r.start <= now), held[0])
        band = r.band_at(now)
        detail = f"service {r.service}"
        if band is not None:
            detail += f"; now: P up {band.p_up_kw:g} kW, P down {band.p_down_kw:g} kW reserved"
        elif r.start > now:
            detail += "; not yet in force"
        return NotificationView(r.id, r.start, r.end, len(r.bands), detail)

    def _activation(self) -> ActivationView | None:
        act, decision = self._last, self._decision
        if act is None or decision is None:
            return None
        running = self._flex.running
        if decision.status is DecisionStatus.REFUSED:
            state = "rejected"
        elif running is not None and running.activation.id == act.id:
            state = "scheduled" if act.start > datetime.now(UTC) else "active"
            if decision.status is DecisionStatus.CURTAILED:
                state += " (curtailed)"
        elif self._ended is None:
            state = "ending"  # released; the final verification follows
        else:
            state = "finished"
        detail = "; ".join(str(r) for r in decision.reasons)
        if self._ended:
            detail = f"{detail}; {self._ended}" if detail else self._ended
        return ActivationView(
            act.id,
            state,
            act.start,
            act.end,
            decision.p_kw,
            decision.q_kvar,
            detail,
            tuple(self._series),
        )
