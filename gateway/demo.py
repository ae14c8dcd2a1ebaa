"""`mgms demo`: the simulated microgrid and the gateway on loopback, end to end.

Starts the simulators in their own process on free ports, runs the gateway on the same
config, waits for data, sends set points and watches them take effect in the simulated
devices, then prints a summary (or one JSON object) and exits 0 only if all went well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fwsim.process import free_port, start_sim
from gateway.app import Gateway
from gateway.config import LoadedConfig
from gateway.demo_market import ams_for, crp_cycle, cycle_ok
from gateway.errors import GatewayError
from gateway.loader import load_config
from gateway.model import Command

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
EFFECT_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class SetpointStep:
    """Write `point` := `value`, then expect `effect_point` to come within `tolerance`
    of `expect` (the simulated device really did it, read back through the gateway)."""

    point: str
    value: float
    effect_point: str
    expect: float
    tolerance: float


# Only steps whose points exist in the config run, so the demo follows the mapping files.
STEPS = (
    SetpointStep("bess1.p_set", 20.0, "bess1.p", 20.0, 0.5),
    SetpointStep("bess1.q_set", -10.0, "bess1.q", -10.0, 0.5),
    SetpointStep("pv1.limit", 50.0, "pv1.p", 30.0, 0.5),  # 60 kW park at noon, capped at 50 %
    SetpointStep("load1.curtail", 25.0, "load1.curtail", 25.0, 0.05),
    SetpointStep("bess2.p_set", 15.0, "bess2.p", 15.0, 0.5),
    SetpointStep("bess2.q_set", -5.0, "bess2.q", -5.0, 0.5),
    SetpointStep("chp1.p_set", 30.0, "chp1.p", 30.0, 0.5),
    SetpointStep("load1.limit", 150.0, "load1.limit_active", 150.0, 0.01),
    SetpointStep("load1.disconnect", 1, "load1.supply", 0.0, 0.01),
    SetpointStep("load1.reconnect", 1, "load1.supply", 1.0, 0.01),
    SetpointStep("load2.curtail", 20.0, "load2.curtail_active", 20.0, 0.05),
    SetpointStep("ev1.limit", 40.0, "ev1.limit", 40.0, 0.05),
)


@dataclass
class StepResult:
    point: str
    value: float
    status: str
    effect_point: str
    observed: float | None
    ok: bool
    effect_ms: float | None


async def _wait_all_good(gw: Gateway, within: float) -> None:
    deadline = time.monotonic() + within
    readable = [m.point.id for m in gw.table if m.point.direction.readable]
    while time.monotonic() < deadline:
        if all((r := gw.table.latest(p)) is not None and r.quality.good for p in readable):
            return
        await asyncio.sleep(0.1)


async def _run_step(gw: Gateway, step: SetpointStep) -> StepResult:
    assert gw.controller is not None
    started = time.monotonic()
    result = await gw.controller.write(Command(step.point, step.value, origin="demo"))
    observed: float | None = None
    effect_ms: float | None = None
    if result.ok:
        deadline = started + EFFECT_TIMEOUT_S
        while time.monotonic() < deadline:
            r = gw.table.latest(step.effect_point)
            if r is not None and r.quality.good and isinstance(r.value, int | float):
                observed = float(r.value)
                if abs(observed - step.expect) <= step.tolerance:
                    effect_ms = (time.monotonic() - started) * 1000
                    break
            await asyncio.sleep(0.05)
    return StepResult(
        step.point,
        step.value,
        result.status.value,
        step.effect_point,
        None if observed is None else round(observed, 3),
        effect_ms is not None,
        None if effect_ms is None else round(effect_ms, 1),
    )


async def run_gateway_demo(config: LoadedConfig, *, market: bool = False) -> dict[str, Any]:
    """Protocol round trips; with `market`, then one CRP cycle with a simulated AMS over
    mutual TLS (the config gets a development north section in its state directory)."""
    async with contextlib.AsyncExitStack() as stack:
        ams = None
        if market:
            ams = await stack.enter_async_context(ams_for(config, config.gateway.state_dir))
        gw = await stack.enter_async_context(Gateway(config))
        connected = await gw.wait_connected(CONNECT_TIMEOUT_S)
        await _wait_all_good(gw, CONNECT_TIMEOUT_S)
        steps = [await _run_step(gw, s) for s in STEPS if s.point in gw.table]
        await asyncio.sleep(0.2)
        points: dict[str, dict[str, int]] = {}
        for m in gw.table:
            if not m.point.direction.readable:
                continue
            entry = points.setdefault(m.device.protocol, {"total": 0, "good": 0})
            entry["total"] += 1
            r = gw.table.latest(m.point.id)
            entry["good"] += int(r is not None and r.quality.good)
        assert gw.controller is not None
        writes = {
            proto: {"sent": n, "confirmed": gw.controller.confirmed.get(proto, 0)}
            for proto, n in gw.controller.sent.items()
        }
        ok = (
            connected
            and all(p["good"] == p["total"] for p in points.values())
            and all(s.ok for s in steps)
        )
        summary: dict[str, Any] = {
            "microgrid": config.gateway.microgrid.id,
            "ok": ok,
            "points": points,
            "writes": writes,
            "setpoints": [asdict(s) for s in steps],
        }
        if ams is not None:
            cycle = await crp_cycle(ams)
            summary.update(cycle)
            summary["ok"] = ok and cycle_ok(cycle)
        summary["reconnects"] = sum(s.reconnects for s in gw.sessions.values())
        return summary


def _human(summary: dict[str, Any]) -> str:
    lines = [f"MGMS gateway demo — microgrid {summary['microgrid']}"]
    for proto, p in summary["points"].items():
        lines.append(f"  {proto:<9} points: {p['good']}/{p['total']} good")
    for proto, w in summary["writes"].items():
        lines.append(f"  {proto:<9} writes: {w['confirmed']}/{w['sent']} confirmed")
    for s in summary["setpoints"]:
        took = f"took effect in {s['effect_ms']} ms" if s["ok"] else "DID NOT take effect"
        lines.append(
            f"  set {s['point']} = {s['value']}: {s['status']}; {s['effect_point']} reads "
            f"{s['observed']} — {took}"
        )
    if "forecast" in summary:
        f, n, a = summary["forecast"], summary["notification"], summary["activation"]
        lines.append(
            f"  forecast {f['intervals']} intervals: baseline {f['p_baseline_kw']} kW at the "
            f"coupling point, adjustable {f['p_range_kw'][0]}..{f['p_range_kw'][1]} kW"
        )
        lines.append(f"  reserve notification: HTTP {n['status']} in {n['latency_ms']} ms")
        lines.append(
            f"  reserve activation to {a['p_set_kw']} kW: HTTP {a['status']} in "
            f"{a['latency_ms']} ms"
        )
        v = summary["verification"]
        if v is None:
            lines.append("  reserve verification: NOT received")
        else:
            for i in v["intervals"]:
                lines.append(
                    f"  verified: set {i['p_set_kw']} kW, baseline {i['p_baseline_kw']} kW, "
                    f"measured {i['p_measured_kw']} kW, delivered {i['p_delivered_kw']} kW "
                    f"({i['p_percent']} %)"
                )
    lines.append("demo " + ("passed" if summary["ok"] else "FAILED"))
    return "\n".join(lines)


def run_demo(config_path: Path, as_json: bool = False) -> int:
    probe = load_config(config_path)
    ports = {d.id: free_port() for d in probe.devices if d.connection.host is not None}
    config = load_config(config_path, port_overrides=ports)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # the summary says it all
        logging.getLogger().setLevel(logging.WARNING)
    # simulated time starts at noon so the PV park produces and curtailment shows
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="mgms-demo-") as state:
        sim_log_path = Path(state) / "sim.log"
        with sim_log_path.open("w") as sim_log:
            sim = start_sim(config_path, ports, extra=["--start", noon.isoformat()], log=sim_log)
            try:
                config.gateway.state_dir = Path(state)
                try:
                    summary = asyncio.run(run_gateway_demo(config, market=True))
                except GatewayError as exc:
                    summary = {"ok": False, "error": str(exc)}
            finally:
                sim.stop()
        if not summary.get("ok"):
            log.error("simulator log:\n%s", sim_log_path.read_text()[-4000:])
    print(json.dumps(summary) if as_json else _human(summary))
    return 0 if summary.get("ok") else 1
