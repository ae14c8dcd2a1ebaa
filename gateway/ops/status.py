"""What the status page and /api/status show: a read-only snapshot of the running gateway.

The flexibility part owns notifications and activations; it hands the page a view of them
by registering a source: `gw.status.set_flex_source(fn)` where `fn()` returns a
`FlexStatus`. Everything else is read from the gateway's own state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.mapping import Quantity
from gateway.model import CommandResult, Reading
from gateway.points import MappedPoint
from gateway.units import convert

if TYPE_CHECKING:
    from gateway.app import Gateway


@dataclass(frozen=True)
class SeriesPoint:
    """One instant of an activation: what was asked, what would have been, what was seen.
    Coupling-point active power in kW (import positive); None where not known."""

    time: datetime
    setpoint_kw: float | None
    baseline_kw: float | None
    measured_kw: float | None


@dataclass(frozen=True)
class ActivationView:
    id: str
    state: str  # e.g. active, finished, curtailed, rejected
    start: datetime
    end: datetime | None = None
    p_kw: float | None = None
    q_kvar: float | None = None
    detail: str = ""
    series: Sequence[SeriesPoint] = ()


@dataclass(frozen=True)
class NotificationView:
    id: str
    start: datetime
    end: datetime
    intervals: int
    detail: str = ""


@dataclass(frozen=True)
class FlexStatus:
    notification: NotificationView | None = None
    activation: ActivationView | None = None  # the current one, else the last one


FlexSource = Callable[[], FlexStatus]


class StatusBoard:
    """Sources the status page reads beyond the gateway core (registered by their owners)."""

    def __init__(self) -> None:
        self._flex: FlexSource | None = None

    def set_flex_source(self, source: FlexSource) -> None:
        self._flex = source

    def flex(self) -> FlexStatus:
        return FlexStatus() if self._flex is None else self._flex()


@dataclass(frozen=True)
class DeviceRow:
    id: str
    protocol: str
    up: bool
    reconnects: int
    polls: int
    last_poll_ms: float | None


@dataclass(frozen=True)
class CommandRow:
    """The last command sent to a point: what, when, by whom, and how the device answered."""

    value: float | int | bool
    time: datetime
    status: str  # confirmed, rejected, timeout, link_down
    confirmed: bool
    origin: str
    detail: str


@dataclass(frozen=True)
class PointRow:
    id: str
    device: str
    der: str | None
    quantity: str
    #: read, write or read-write; a write-only point has no reading, only `command`
    direction: str
    value: float | int | bool | None
    unit: str
    quality: str
    good: bool
    age_s: float | None
    detail: str
    command: CommandRow | None = None


@dataclass(frozen=True)
class DerRow:
    id: str
    type: str
    control: str
    p_kw: float | None
    q_kvar: float | None
    soc_pct: float | None
    setpoint_kw: float | None


@dataclass(frozen=True)
class Snapshot:
    microgrid: str
    name: str
    version: str
    time: datetime
    uptime_s: float
    ready: bool
    not_ready: str
    devices: list[DeviceRow]
    points: list[PointRow]
    ders: list[DerRow]
    flex: FlexStatus = field(default_factory=FlexStatus)


def point_row(
    m: MappedPoint, r: Reading | None, sent: CommandResult | None, now: datetime
) -> PointRow:
    """One point as operators see it: its latest reading and the last command sent to it."""
    command = None
    if sent is not None:
        value = sent.command.value
        if isinstance(value, float | int) and not isinstance(value, bool):
            value = convert(float(value), m.point.unit, m.unit)  # shown in the table's unit
        command = CommandRow(
            value,
            sent.completed_at,
            sent.status.value,
            sent.ok,
            sent.command.origin,
            sent.detail,
        )
    quality = "no data" if r is None else str(r.quality)
    if not m.point.direction.readable:
        quality = "write-only" if sent is None else f"write-only, {sent.status.value}"
    return PointRow(
        m.point.id,
        m.device.id,
        m.point.der,
        m.point.quantity.value,
        m.point.direction.value,
        None if r is None else r.value,
        m.unit if r is None else r.unit,  # the unit the value is in
        quality,
        r is not None and r.quality.good,
        None if r is None else round((now - r.gateway_time).total_seconds(), 1),
        "" if r is None else r.detail,
        command,
    )


def snapshot(gw: Gateway) -> Snapshot:
    from gateway import __version__

    now = datetime.now(UTC)
    cfg = gw.config.gateway
    devices = [
        DeviceRow(
            s.device.id,
            s.device.protocol,
            s.up,
            s.reconnects,
            s.polls,
            round(s.last_poll_s * 1000, 2) if s.polls else None,
        )
        for s in gw.sessions.values()
    ]
    last = gw.controller.last if gw.controller is not None else {}
    table = gw.table
    points = [point_row(m, table.latest(m.point.id), last.get(m.point.id), now) for m in table]
    ders = [
        DerRow(
            d.id,
            d.type.value,
            d.control.value,
            table.value(d.id, Quantity.ACTIVE_POWER),
            table.value(d.id, Quantity.REACTIVE_POWER),
            table.value(d.id, Quantity.STATE_OF_CHARGE),
            table.value(d.id, Quantity.ACTIVE_POWER_SETPOINT),
        )
        for d in cfg.ders
    ]
    pcc = cfg.coupling_point.id
    ders.append(
        DerRow(
            pcc,
            "coupling point",
            f"import ≤ {cfg.coupling_point.import_limit_kw:g} kW, "
            f"export ≤ {cfg.coupling_point.export_limit_kw:g} kW",
            table.value(pcc, Quantity.ACTIVE_POWER),
            table.value(pcc, Quantity.REACTIVE_POWER),
            None,
            None,
        )
    )
    readiness = gw.health.ready()
    return Snapshot(
        microgrid=cfg.microgrid.id,
        name=cfg.microgrid.name,
        version=__version__,
        time=now,
        uptime_s=round(time.monotonic() - gw.started_monotonic, 1),
        ready=readiness.ok,
        not_ready=readiness.failing(),
        devices=devices,
        points=points,
        ders=ders,
        flex=gw.status.flex(),
    )


def plain(value: Any) -> Any:
    """A dataclass dump made JSON-ready (times as ISO 8601)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def as_json(snap: Snapshot) -> dict[str, Any]:
    return dict(plain(asdict(snap)))
