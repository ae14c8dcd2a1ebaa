"""The discovery round trip: a device served from mapping A, discovered into draft B, must
give the same readings through B as through A."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from drivers.registry import create_driver
from gateway.loader import load_config
from gateway.mapping import Device, Point
from gateway.model import Value


def config_with(tmp_path: Path, config: Path, mapping: Path) -> Path:
    """`config` (its DERs and coupling point) with `mapping` as its only mapping file."""
    raw = yaml.safe_load(config.read_text())
    raw["mappings"] = [str(mapping)]
    raw["state_dir"] = str(tmp_path / "state")
    path = tmp_path / f"with-{mapping.stem}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def read_all(device: Device) -> dict[str, Value]:
    """Every point of the device read once; every reading must be good."""
    driver = create_driver(device)
    await driver.connect()
    try:
        readings = await driver.read(device.points)
    finally:
        await driver.close()
    for r in readings:
        assert r.quality.good, (r.point, r.detail)
    return {r.point: r.value for r in readings}


def pair_points(device_a: Device, device_b: Device) -> dict[str, Point]:
    """A's point id -> B's point at the same address, with the same role and unit."""
    b_at = {str(device_b.address_of(p.id)): p for p in device_b.points}
    pairs = {}
    for a in device_a.points:
        b = b_at.get(str(device_a.address_of(a.id)))
        assert b is not None, f"{a.id} at {device_a.address_of(a.id)} not in the draft"
        assert (b.der, b.quantity, b.unit) == (a.der, a.quantity, a.unit), a.id
        pairs[a.id] = b
    return pairs


async def same_readings(device_a: Device, device_b: Device) -> dict[str, Value]:
    """Read A, B, A until A read the same twice (the physics moves on); assert that B's
    paired points read what A read; return A's readings."""
    pairs = pair_points(device_a, device_b)
    for _ in range(20):
        first = await read_all(device_a)
        through_b = await read_all(device_b)
        second = await read_all(device_a)
        if first == second:
            break
        await asyncio.sleep(0.1)
    assert first == second, "the simulator never held still for two reads"
    assert {a: through_b[b.id] for a, b in pairs.items()} == first
    return first


def single_device(config: Path, port_overrides: dict[str, int] | None = None) -> Device:
    (device,) = load_config(config, port_overrides=port_overrides).devices
    return device
