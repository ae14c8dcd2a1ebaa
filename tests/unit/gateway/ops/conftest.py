"""A gateway over in-memory devices, with files on disk so reloads can re-read them."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drivers.base import Driver
from gateway.app import Gateway
from gateway.config import LoadedConfig
from gateway.loader import load_config
from gateway.mapping import Device
from tests.support.memory_driver import MemoryDevice, MemoryDriver

MAPPING = """
devices:
  - id: dev-a
    protocol: modbus
    connection: {host: 127.0.0.1, port: 1}
    poll_interval: 0.05
    timeout: 0.2
    points:
      - {id: a.p, address: 1/holding/0, type: int16, unit: KiloW, der: bess, quantity: active_power}
      - id: a.soc
        address: 1/holding/1
        type: int16
        unit: PERCENT
        der: bess
        quantity: state_of_charge
      - id: a.set
        address: 1/holding/2
        type: int16
        unit: KiloW
        direction: read-write
        limits: {min: -10, max: 10}
        der: bess
        quantity: active_power_setpoint
  - id: dev-b
    protocol: modbus
    connection: {host: 127.0.0.1, port: 2}
    poll_interval: 0.05
    timeout: 0.2
    points:
      - {id: b.p, address: 1/holding/0, type: int16, unit: KiloW, der: pcc, quantity: active_power}
      - {id: b.bad, address: 1/holding/1, type: int16, unit: KiloW}
"""

CONFIG = """
microgrid: {id: mg, name: Test <grid>}
state_dir: state
mappings: [m.yaml]
coupling_point: {import_limit_kw: 10, export_limit_kw: 10}
reconnect_max_s: 0.2
ops: {port: 0, ready_wait_s: 2, drain_s: 1}
ders:
  - {id: bess, type: battery, ratings: {p_min_kw: -10, p_max_kw: 10, energy_kwh: 20}}
"""


@dataclass
class Rig:
    dir: Path
    gw: Gateway
    fields: dict[str, MemoryDevice] = field(default_factory=dict)

    def load(self) -> LoadedConfig:
        return load_config(self.dir / "gw.yaml")

    def write(self, mapping: str | None = None, config: str | None = None) -> None:
        if mapping is not None:
            (self.dir / "m.yaml").write_text(textwrap.dedent(mapping))
        if config is not None:
            (self.dir / "gw.yaml").write_text(textwrap.dedent(config))


def field_factory(fields: dict[str, MemoryDevice]) -> Callable[[Device], Driver]:
    def factory(device: Device) -> Driver:
        if device.id not in fields:
            fields[device.id] = MemoryDevice()
        return MemoryDriver(device, fields[device.id])

    return factory


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    (tmp_path / "m.yaml").write_text(textwrap.dedent(MAPPING))
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    fields = {"dev-a": MemoryDevice(), "dev-b": MemoryDevice()}
    fields["dev-a"].values.update({"a.p": 4.0, "a.soc": 55.0, "a.set": 0.0})
    fields["dev-b"].values["b.p"] = -3.5
    fields["dev-b"].refuse.add("b.bad")
    config = load_config(tmp_path / "gw.yaml")
    async with Gateway(config, driver_factory=field_factory(fields)) as gw:
        yield Rig(tmp_path, gw, fields)
