"""The fault suite's field: every device in its own simulator process, on ports fixed for
the whole test, so one device can be killed and restarted while the others run."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from gateway.app import Gateway
from gateway.loader import load_config
from gateway.model import QualityFlag
from tests.support.procs import SimProcess, free_port, start_sim

FIELD_CONFIG = Path(__file__).parent / "data" / "config.yaml"
#: one device per protocol in FIELD_CONFIG
DEVICES = {
    "modbus": "bess1-inverter",
    "iec104": "chp1-rtu",
    "iec61850": "bess2-ied",
    "dlms": "load1-customer-meter",
}
WITNESS = "pcc-meter"
#: restarts per simulator: a few in `make test`, 10 with MGMS_LONG_FAULTS=1
LONG = os.environ.get("MGMS_LONG_FAULTS", "") not in ("", "0")
RESTARTS = 10 if LONG else 3


class Field:
    """Simulator processes of `config`, one per device, each on its own fixed port."""

    def __init__(self, devices: Sequence[str], config: Path = FIELD_CONFIG) -> None:
        self.config = config
        self.ports = {d: free_port() for d in devices}
        self.sims: dict[str, SimProcess] = {}

    def start(self, device: str) -> None:
        """Blocks about a second. From a worker thread (asyncio.to_thread) the simulator
        lives as long as that thread: PR_SET_PDEATHSIG follows the parent thread; the
        loop's default executor keeps its threads until the loop shuts it down."""
        assert device not in self.sims, f"{device} already runs"
        self.sims[device] = start_sim(self.config, {device: self.ports[device]}, [device])

    def kill(self, device: str) -> None:
        """SIGKILL: the device vanishes without closing its connections politely."""
        self.sims.pop(device).stop(signal.SIGKILL)

    def stop_all(self) -> None:
        for device in list(self.sims):
            self.sims.pop(device).stop()


@contextmanager
def field(devices: Sequence[str], config: Path = FIELD_CONFIG) -> Iterator[Field]:
    f = Field(devices, config)
    try:
        for device in devices:
            f.start(device)
        yield f
    finally:
        f.stop_all()


def field_config(
    directory: Path,
    hosts: Mapping[str, str] | None = None,
    options: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """FIELD_CONFIG with the devices in `hosts` moved to those addresses and `options`
    merged into the devices' options, written to `directory`."""
    mapping = yaml.safe_load((FIELD_CONFIG.parent / "field.yaml").read_text())
    for device in mapping["devices"]:
        connection = device["connection"]
        connection["host"] = (hosts or {}).get(device["id"], connection["host"])
        merged = {**device.get("options", {}), **(options or {}).get(device["id"], {})}
        if "password_file" in merged:
            merged["password_file"] = str(FIELD_CONFIG.parent / merged["password_file"])
        device["options"] = merged
    (directory / "field.yaml").write_text(yaml.safe_dump(mapping))
    config = directory / "config.yaml"
    text = FIELD_CONFIG.read_text().replace("../../../var/test-faults", "state")
    config.write_text(text)
    return config


def gateway_for(state_dir: Path, ports: Mapping[str, int], config: Path = FIELD_CONFIG) -> Gateway:
    """A gateway for the devices in `ports` only, its store in `state_dir`."""
    loaded = load_config(config, port_overrides=ports)
    for mapping in loaded.mappings.values():
        mapping.devices = [d for d in mapping.devices if d.id in ports]
    loaded.gateway.state_dir = state_dir
    return Gateway(loaded)


def readable(gw: Gateway, device: str) -> list[str]:
    return [p.id for p in gw.sessions[device].device.points if p.direction.readable]


async def link_events(
    gw: Gateway, device: str, expected: Sequence[str], within: float = 10.0
) -> list[str]:
    """The device's link_up/link_down events in the store, once they are `expected` or
    `within` seconds passed: a link_up is written just after the poll that made the
    values good, so a test that saw good values may be a moment early."""
    assert gw.store is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        events = await gw.store.events()
        kinds = [e.kind for e in events if e.device == device and e.kind.startswith("link_")]
        if kinds == list(expected) or loop.time() > deadline:
            return kinds
        await asyncio.sleep(0.05)


def is_comm_failure(gw: Gateway, point: str) -> bool:
    reading = gw.table.latest(point)
    return reading is not None and QualityFlag.COMM_FAILURE in reading.quality.flags


def is_good(gw: Gateway, point: str) -> bool:
    reading = gw.table.latest(point)
    return reading is not None and reading.quality.good


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors the gateway logged (an unexpected driver error would be one); pymodbus logs
    every missing answer as an error of its own."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("gateway", "drivers"))
    ]
