"""A protocol added as one folder (tests/support/toyproto/) and registered only through a
distribution's `mgms.protocols` entry point: `mgms sim` serves it in its own process and
the gateway reads every point good and writes to it, with no edit anywhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import Gateway
from gateway.errors import ConfigError
from gateway.loader import load_config
from gateway.model import Command, CommandStatus
from gateway.protocols import base
from tests.support.procs import sim_process
from tests.support.sites import write_site
from tests.support.toyproto.install import install_distribution
from tests.support.waiting import until

pytestmark = pytest.mark.integration

POINTS: list[dict[str, Any]] = [
    {"id": "toy1.v", "address": "volts", "unit": "V", "quantity": "voltage"},
    {"id": "toy1.t", "address": "temp", "unit": "DEG_C", "quantity": "temperature", "scale": 0.1},
    {"id": "toy1.sp", "address": "setpoint", "unit": "PERCENT", "direction": "read-write"},
]


def site(folder: Path) -> Path:
    device = {
        "id": "toy1",
        "protocol": "toy",
        "connection": {"host": "127.0.0.1", "port": 7000},
        "poll_interval": 0.2,
        "points": POINTS,
    }
    return write_site(folder, yaml.safe_dump({"devices": [device]}))


def reread_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the protocols read so far: the next look-up reads the entry points again."""
    monkeypatch.setattr(base, "_REGISTRY", {})
    monkeypatch.setattr(base, "_ENTRY_POINTS_READ", [])


async def test_a_protocol_installed_by_entry_point_is_served_and_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = site(tmp_path)
    reread_entry_points(monkeypatch)
    # not installed: the mapping names a protocol nobody registered
    with pytest.raises(ConfigError, match=r"m\.yaml.*device 'toy1'.*unknown protocol 'toy'"):
        load_config(path)

    installed = install_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.setenv("PYTHONPATH", str(installed))  # the simulator's process too
    reread_entry_points(monkeypatch)
    with sim_process(["toy1"], config=path) as sim:
        config = load_config(path, port_overrides=sim.ports)
        config.gateway.state_dir = tmp_path / "state"
        async with Gateway(config) as gw:
            assert gw.controller is not None
            assert await gw.wait_connected(15)

            def all_good() -> bool:
                readings = [gw.table.latest(p["id"]) for p in POINTS]
                return all(r is not None and r.quality.good for r in readings)

            await until(all_good, within=15)
            volts = gw.table.latest("toy1.v")
            assert volts is not None and volts.value == pytest.approx(230.0, abs=2.5)

            result = await gw.controller.write(Command("toy1.sp", 42.5))
            assert result.status is CommandStatus.CONFIRMED, result.detail

            # the written value comes back in the next polls
            def setpoint() -> object:
                reading = gw.table.latest("toy1.sp")
                return reading is not None and reading.value == 42.5

            await until(setpoint, within=10)
            assert all_good()
