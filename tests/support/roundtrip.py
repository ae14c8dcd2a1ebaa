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
    # a billing meter the config names is a device of its own mappings, not of the draft
    raw.get("coupling_point", {}).pop("billing_meter", None)
    raw["state_dir"] = str(tmp_path / "state")
    path = tmp_path / f"with-{mapping.stem}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def read_all(device: Device) -> dict[str, Value]:
    """Every point of the device read once; every reading must be good."""
    driver = create_driver(device)
    await driver.connect()
    try:
        readings = await driver.read([p for p in device.points if p.direction.readable])
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


def _raw(point: Point, value: Value) -> Value:
    """The value before the point's scale and offset: what the device said (after the
    protocol's own scaling), to compare points that scale differently."""
    if isinstance(value, bool) or value is None:
        return value
    return (float(value) - point.offset) / point.scale


def _between(b: Value, first: Value, second: Value) -> bool:
    """B, read between two reads of A, lies between them (equal when A held still)."""
    if isinstance(first, bool) or first is None or second is None:
        return b == first == second
    if isinstance(b, bool) or b is None:
        return False
    low, high = sorted((float(first), float(second)))
    slack = 1e-6 * max(1.0, abs(low), abs(high))
    return low - slack <= float(b) <= high + slack


async def same_readings(
    device_a: Device, device_b: Device, scale_free: frozenset[str] = frozenset()
) -> dict[str, Value]:
    """Read A, B, A; every point of A paired in B must read, through B, a value between
    A's two readings (equal when A held still; meters count on and clocks tick between
    reads). Points of A in `scale_free` are compared before each mapping's own scale and
    offset (a sign convention the device does not tell). Retried a few times when a value
    moved back and forth; returns A's first readings."""
    pairs = pair_points(device_a, device_b)
    points_a = {
        p.id: p if p.id in scale_free else p.model_copy(update={"scale": 1.0, "offset": 0.0})
        for p in device_a.points
    }
    pairs = {
        a: b if a in scale_free else b.model_copy(update={"scale": 1.0, "offset": 0.0})
        for a, b in pairs.items()
    }
    bad: list[str] = []
    for _ in range(10):
        first = await read_all(device_a)
        through_b = await read_all(device_b)
        second = await read_all(device_a)
        bad = [
            f"{a}: A {first[a]} .. {second[a]}, B {through_b[b.id]}"
            for a, b in pairs.items()
            if a in first
            and not _between(
                _raw(b, through_b[b.id]),
                _raw(points_a[a], first[a]),
                _raw(points_a[a], second[a]),
            )
        ]
        if not bad:
            return first
        await asyncio.sleep(0.1)
    raise AssertionError(f"B does not read what A reads: {bad}")


def single_device(config: Path, port_overrides: dict[str, int] | None = None) -> Device:
    (device,) = load_config(config, port_overrides=port_overrides).devices
    return device
