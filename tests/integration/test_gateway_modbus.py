"""The whole gateway (acquisition, point table, store, control) against the simulated
microgrid over Modbus TCP, and `mgms demo --json` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.demo import run_gateway_demo
from gateway.demo_market import DEMO_MIN_DELIVERED_PCT
from gateway.loader import load_config
from gateway.mapping import Quantity
from gateway.model import Command, CommandStatus, QualityFlag
from tests.support.procs import DEMO_CONFIG, ROOT, child_env, free_port, sim_process, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()


def modbus_devices() -> list[str]:
    return [d.id for d in load_config(DEMO_CONFIG).devices if d.protocol == "modbus"]


async def test_gateway_reads_stores_and_controls(tmp_path: Path) -> None:
    with sim_process(modbus_devices(), extra=["--start", NOON]) as sim:
        config = load_config(DEMO_CONFIG, port_overrides=sim.ports)
        config.mappings = {p: m for p, m in config.mappings.items() if p.name == "modbus.yaml"}
        config.gateway.state_dir = tmp_path
        summary = await run_gateway_demo(config)
    assert summary["ok"], summary
    assert summary["points"]["modbus"]["good"] == summary["points"]["modbus"]["total"] == 24
    assert summary["writes"]["modbus"] == {"sent": 4, "confirmed": 4}
    effects = {s["effect_point"]: s["observed"] for s in summary["setpoints"]}
    assert effects["bess1.p"] == pytest.approx(20.0, abs=0.5)
    assert effects["pv1.p"] == pytest.approx(30.0, abs=0.5)


async def test_store_history_and_reconnect_after_simulator_restart(tmp_path: Path) -> None:
    devices = ["bess1-inverter", "pcc-meter"]
    ports = {d: free_port() for d in devices}
    sim = start_sim(DEMO_CONFIG, ports, devices=devices)
    config = load_config(DEMO_CONFIG, port_overrides=ports)
    for m in config.mappings.values():
        m.devices = [d for d in m.devices if d.id in devices]
    config.gateway.state_dir = tmp_path
    config.gateway.reconnect_max_s = 0.5
    started = datetime.now(UTC)
    try:
        async with Gateway(config) as gw:
            assert gw.controller is not None and gw.store is not None
            assert await gw.wait_connected(10)
            await until(lambda: gw.table.value("pcc", Quantity.ACTIVE_POWER) is not None)
            pcc_before = gw.table.value("pcc", Quantity.ACTIVE_POWER)
            assert pcc_before is not None
            result = await gw.controller.write(Command("bess1.p_set", -15.0))
            assert result.status is CommandStatus.CONFIRMED
            await until(lambda: gw.table.value("bess1", Quantity.ACTIVE_POWER) == -15.0)
            # the coupling point imports what the battery now charges (the load drifts slowly)
            await until(
                lambda: (
                    gw.table.value("pcc", Quantity.ACTIVE_POWER)
                    == pytest.approx(pcc_before + 15, abs=1.0)
                )
            )

            sim.stop()
            await until(lambda: not gw.sessions["pcc-meter"].up)
            reading = gw.table.latest("pcc.p")
            assert reading is not None and QualityFlag.COMM_FAILURE in reading.quality.flags
            command = await gw.controller.write(Command("bess1.p_set", 0.0))
            assert command.status is CommandStatus.LINK_DOWN

            sim = start_sim(DEMO_CONFIG, ports, devices=devices)
            await until(
                lambda: gw.sessions["pcc-meter"].up and gw.sessions["bess1-inverter"].up, within=15
            )
            await until(lambda: gw.table.latest("pcc.p").quality.good)  # type: ignore[union-attr]
            await gw.store.flush()
            history = await gw.store.range("bess1.p", started, datetime.now(UTC) + timedelta(1))
            assert any(s.value == -15.0 for s in history)
            assert any(not s.quality.good for s in history)  # the outage is in the history
            kinds = [e.kind for e in await gw.store.events() if e.device == "pcc-meter"]
            assert kinds == ["link_up", "link_down", "link_up"]
            writes = await gw.store.events("write")
            assert [(e.point, e.detail["status"]) for e in writes] == [
                ("bess1.p_set", "confirmed"),
                ("bess1.p_set", "link_down"),
            ]
    finally:
        sim.stop()


@pytest.mark.timeout(300)  # every protocol's simulator starts; slow when the machine is loaded
def test_mgms_demo_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    for protocol, counts in summary["points"].items():
        assert counts["good"] == counts["total"] > 0, protocol
    for protocol, counts in summary["writes"].items():
        assert counts["confirmed"] == counts["sent"] > 0, protocol
    assert summary["points"]["modbus"]["total"] == 24
    assert set(summary["points"]) == {"modbus", "iec104", "iec61850", "dlms", "cems"}
    assert summary["points"]["cems"]["total"] == 6
    assert summary["writes"]["cems"] == {"sent": 2, "confirmed": 2}
    # the CRP cycle over mutual TLS with the AMS simulator
    assert summary["forecast"]["intervals"] > 0
    assert summary["notification"]["status"] == 200
    assert summary["activation"]["status"] == 200
    verification = summary["verification"]
    assert verification["activation"] == summary["activation"]["id"]
    assert verification["percent_delivered"] >= DEMO_MIN_DELIVERED_PCT
    for interval in verification["intervals"]:
        assert interval["p_set_kw"] == summary["activation"]["p_set_kw"]
