"""The gateway core's own metrics and health checks, registered once per Gateway.

Values that live in the sessions, the point table, the controller and the store are read at
scrape time; only poll latency is observed as it happens (a histogram needs every sample).
Other parts (northbound outbox, flexibility) register their families the same way on
the registry and their readiness checks on the health checks; docs/deployment.md lists them.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Protocol

from gateway import __version__
from gateway.acquisition import PollListener
from gateway.core import RunningCore
from gateway.ops.health import CheckResult, Health
from gateway.ops.metrics import Registry, Samples
from gateway.store import Store


class CoreParts(RunningCore, Protocol):
    """What the core's metrics read of the running gateway besides the core (the
    composition root hands itself over once its store and controller exist)."""

    @property
    def store(self) -> Store: ...
    @property
    def metrics(self) -> Registry: ...
    @property
    def health(self) -> Health: ...
    @property
    def poll_listeners(self) -> list[PollListener]: ...
    @property
    def started_at(self) -> float: ...
    @property
    def last_flush(self) -> float: ...


#: the housekeeping loop flushes every second; this many seconds without one means trouble
STORE_READY_MAX_AGE_S = 5.0
STORE_LIVE_MAX_AGE_S = 30.0
VALIDITIES = ("good", "invalid", "questionable", "none")


def instrument(gw: CoreParts) -> None:
    m = gw.metrics
    m.callback(
        "mgms_build_info",
        "Gateway version (always 1).",
        "gauge",
        lambda: [((__version__,), 1)],
        ("version",),
    )
    m.callback(
        "mgms_start_time_seconds",
        "When the gateway started, unix seconds.",
        "gauge",
        lambda: [((), gw.started_at)],
    )
    poll = m.histogram(
        "mgms_poll_duration_seconds",
        "Time of one poll of a device (read of all its readable points).",
        ("device",),
    )
    gw.poll_listeners.append(lambda device, seconds: poll.observe(seconds, device=device))
    m.callback(
        "mgms_device_up",
        "1 while the link to the device is up.",
        "gauge",
        lambda: [((s.device.id, s.device.protocol), int(s.up)) for s in gw.sessions.values()],
        ("device", "protocol"),
    )
    m.callback(
        "mgms_device_reconnects_total",
        "Reconnect attempts after a link failure.",
        "counter",
        lambda: [((s.device.id,), s.reconnects) for s in gw.sessions.values()],
        ("device",),
    )
    m.callback(
        "mgms_device_polls_total",
        "Completed polls.",
        "counter",
        lambda: [((s.device.id,), s.polls) for s in gw.sessions.values()],
        ("device",),
    )
    m.callback(
        "mgms_points",
        "Readable points by the validity of their latest reading (none: no reading yet).",
        "gauge",
        lambda: _points_by_validity(gw),
        ("device", "validity"),
    )
    m.callback(
        "mgms_writes_sent_total",
        "Commands sent to devices.",
        "counter",
        lambda: [((p,), n) for p, n in gw.controller.sent.items()],
        ("protocol",),
    )
    m.callback(
        "mgms_writes_confirmed_total",
        "Commands the device confirmed.",
        "counter",
        lambda: [((p,), n) for p, n in gw.controller.confirmed.items()],
        ("protocol",),
    )
    m.callback(
        "mgms_store_pending_samples",
        "Samples buffered for the next store flush.",
        "gauge",
        lambda: [((), gw.store.pending)],
    )
    m.callback(
        "mgms_store_flush_age_seconds",
        "Seconds since the store last flushed successfully.",
        "gauge",
        lambda: [((), time.monotonic() - gw.last_flush)],
    )
    m.counter("mgms_reloads_total", "Config reloads by result.", ("result",))
    gw.health.add_liveness("store", lambda: _store_check(gw, STORE_LIVE_MAX_AGE_S))
    gw.health.add_readiness("store", lambda: _store_check(gw, STORE_READY_MAX_AGE_S))
    gw.health.add_readiness("devices", lambda: _devices_check(gw))


def _points_by_validity(gw: CoreParts) -> Samples:
    counts: Counter[tuple[str, str]] = Counter()
    for device in gw.config.devices:
        for validity in VALIDITIES:
            counts[(device.id, validity)] = 0
    for mapped in gw.table:
        if not mapped.point.direction.readable:
            continue
        q = gw.table.quality(mapped.point.id)
        counts[(mapped.device.id, "none" if q is None else q.validity.value)] += 1
    return list(counts.items())


def _store_check(gw: CoreParts, max_age: float) -> CheckResult:
    age = time.monotonic() - gw.last_flush
    if age > max_age:
        return CheckResult(False, f"no successful flush for {age:.1f} s")
    return CheckResult(True, f"flushed {age:.1f} s ago")


def _devices_check(gw: CoreParts) -> CheckResult:
    down = sorted(s.device.id for s in gw.sessions.values() if not s.up)
    total = len(gw.sessions)
    if down:
        return CheckResult(False, f"{len(down)}/{total} devices down: {', '.join(down)}")
    return CheckResult(True, f"{total} devices up")
