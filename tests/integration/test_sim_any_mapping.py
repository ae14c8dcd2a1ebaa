"""`mgms sim` serves any valid mapping: a generated site of Modbus devices whose points
have no DER role, served by the simulator in its own process and read by the gateway
with every point good; values move with time and written values are kept."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import Gateway
from gateway.loader import load_config
from gateway.model import Command, CommandStatus
from tests.support.procs import sim_process
from tests.support.waiting import until

pytestmark = pytest.mark.integration

DEVICES = 20
POINTS = 25

#: (type, table, registers, unit, quantity or None, scale) cycled over a device's points
KINDS: list[tuple[str, str, int, str, str | None, float]] = [
    ("float32", "input", 2, "V", "voltage", 1.0),
    ("uint16", "input", 1, "HZ", "frequency", 0.01),
    ("int32", "input", 2, "A", "current", 0.01),
    ("int16", "holding", 1, "W", "active_power", 1.0),
    ("float32", "holding", 2, "VAR", "reactive_power", 1.0),
    ("uint32", "input", 2, "W-HR", "energy_import", 1.0),
    ("int16", "input", 1, "DEG_C", "temperature", 0.1),
    ("uint16", "holding", 1, "PERCENT", None, 0.1),
    ("float64", "input", 4, "KiloW", None, 1.0),
    ("uint16", "input", 1, "UNITLESS", None, 1.0),
    ("bool", "coil", 1, "UNITLESS", None, 1.0),
    ("bool", "discrete", 1, "UNITLESS", "status", 1.0),
]


def site(folder: Path) -> Path:
    """A config with DEVICES Modbus devices of POINTS points each, none with a DER."""
    devices = []
    for d in range(DEVICES):
        points: list[dict[str, Any]] = []
        next_at = {"input": 0, "holding": 0, "coil": 0, "discrete": 0}
        for p, (dtype, table, width, unit, quantity, scale) in zip(
            range(POINTS), itertools.cycle(KINDS), strict=False
        ):
            point: dict[str, Any] = {
                "id": f"dev{d}.p{p}",
                "address": f"1/{table}/{next_at[table]}",
                "unit": unit,
                "scale": scale,
            }
            if table not in ("coil", "discrete"):
                point["type"] = dtype
            if quantity is not None:
                point["quantity"] = quantity
            if table in ("holding", "coil"):
                point["direction"] = "read-write"
            if unit == "PERCENT":
                point["limits"] = {"min": 0, "max": 60}
            next_at[table] += width
            points.append(point)
        devices.append(
            {
                "id": f"dev{d}",
                "protocol": "modbus",
                "connection": {"host": "127.0.0.1", "port": 1502},
                "poll_interval": 0.5,
                "points": points,
            }
        )
    (folder / "site.yaml").write_text(yaml.safe_dump({"devices": devices}), encoding="utf-8")
    config = {
        "microgrid": {"id": "site", "name": "generated site"},
        "state_dir": "state",
        "mappings": ["site.yaml"],
        "coupling_point": {"import_limit_kw": 100, "export_limit_kw": 100},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def test_sim_serves_points_without_der_roles(tmp_path: Path) -> None:
    path = site(tmp_path)
    devices = [d.id for d in load_config(path).devices]
    with sim_process(devices, config=path) as sim:
        config = load_config(path, port_overrides=sim.ports)
        config.gateway.state_dir = tmp_path / "state"
        readable = [p for d in config.devices for p in d.points if p.direction.readable]
        assert len(readable) == DEVICES * POINTS
        async with Gateway(config) as gw:
            assert gw.controller is not None
            assert await gw.wait_connected(30)

            def all_good() -> bool:
                return all(
                    (r := gw.table.latest(p.id)) is not None and r.quality.good for p in readable
                )

            await until(all_good, within=30)
            first = {p.id: gw.table.latest(p.id) for p in readable}

            # values move with simulated time (a measured point, not a counter or status)
            voltage = first["dev0.p0"]
            assert voltage is not None and voltage.value == pytest.approx(230.0, abs=2.5)
            await until(
                lambda: (r := gw.table.latest("dev0.p0")) is not None and r.value != voltage.value,
                within=10,
            )
            # within the point's limits (0..60 %)
            percent = [p.id for p in readable if p.unit == "PERCENT"]
            for pid in percent:
                r = gw.table.latest(pid)
                assert r is not None and isinstance(r.value, float) and 0 <= r.value <= 60, r

            # a written value is kept
            result = await gw.controller.write(Command("dev3.p7", 42.5))
            assert result.status is CommandStatus.CONFIRMED, result.detail
            await until(
                lambda: (r := gw.table.latest("dev3.p7")) is not None and r.value == 42.5,
                within=10,
            )
            assert all_good()
