"""What the simulator serves for a point: physics converted into the point's unit where its
role is modelled, otherwise values of its own that move with time, written values kept;
and every protocol front end serves a point without a DER."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fwsim.dlms_server import Meter
from fwsim.iec104_server import Iec104FrontEnd
from fwsim.iec61850_server import Iec61850FrontEnd
from fwsim.physics import BatteryModel, Microgrid
from fwsim.points import PointFault, PointValues
from gateway.config import LoadedConfig
from gateway.loader import load_config
from gateway.mapping import Device, Point
from tests.support.handclock import HandClock
from tests.support.procs import free_port
from tests.support.sites import write_site

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


MODBUS = """
devices:
  - id: dev
    protocol: modbus
    connection: {host: 127.0.0.1, port: 1502}
    points:
      - {id: bess.p, address: 1/holding/0, type: float32, unit: W, der: bess,
         quantity: active_power}
      - id: bess.p_set
        address: 1/holding/2
        type: float32
        unit: MegaW
        direction: read-write
        der: bess
        quantity: active_power_setpoint
      - {id: v, address: 1/input/0, type: float32, unit: KiloV, quantity: voltage}
      - {id: e, address: 1/input/2, type: float32, unit: W-HR, quantity: energy_import}
      - {id: t, address: 1/input/4, type: float32, unit: DEG_C, der: bess, quantity: temperature}
      - id: share
        address: 1/holding/4
        type: uint16
        scale: 0.1
        unit: PERCENT
        direction: read-write
        limits: {min: 0, max: 55}
"""


def loaded(tmp_path: Path, mapping: str) -> LoadedConfig:
    return load_config(write_site(tmp_path, mapping))


def grid_of(config: LoadedConfig, failing: frozenset[str] = frozenset()) -> Microgrid:
    grid = Microgrid.build(config.gateway.ders, config.gateway.coupling_point, HandClock(T0))
    grid.failing = failing
    return grid


def points(device: Device) -> dict[str, Point]:
    return {p.id: p for p in device.points}


def test_modelled_points_in_the_point_unit(tmp_path: Path) -> None:
    config = loaded(tmp_path, MODBUS)
    grid = grid_of(config)
    values = PointValues(grid)
    pts = points(config.devices[0])
    values.write(pts["bess.p_set"], 0.02)  # MW
    model = grid.ders["bess"]
    assert isinstance(model, BatteryModel) and model.p_set_kw == pytest.approx(20.0)
    assert values.value(pts["bess.p_set"]) == pytest.approx(0.02)
    model.p_kw = 12.3455
    assert values.value(pts["bess.p"]) == pytest.approx(12345.5)  # W


def test_other_points_move_with_time_within_limits_and_keep_writes(tmp_path: Path) -> None:
    config = loaded(tmp_path, MODBUS)
    grid = grid_of(config)
    clock = grid.clock
    assert isinstance(clock, HandClock)
    values = PointValues(grid)
    pts = points(config.devices[0])
    seen = []
    for second in range(0, 60, 5):
        clock.seconds = second
        seen.append(values.value(pts["v"]))
        assert 0 <= values.value(pts["share"]) <= 55
    assert len(set(seen)) > 5 and all(0.2 < v < 0.24 for v in seen)  # about 230 V in kV
    # the same moment gives the same value: deterministic
    again = PointValues(grid)
    assert again.value(pts["v"]) == values.value(pts["v"])
    # a counter only grows (in Wh here)
    first = values.value(pts["e"])
    clock.seconds += 3600
    assert values.value(pts["e"]) > first > 1000
    # a battery temperature the physics does not model still has a value
    assert 15 < values.value(pts["t"]) < 35
    values.write(pts["share"], 42.0)
    clock.seconds += 17
    assert values.value(pts["share"]) == 42.0


def test_failing_points_fail(tmp_path: Path) -> None:
    config = loaded(tmp_path, MODBUS)
    values = PointValues(grid_of(config, frozenset({"v"})))
    pts = points(config.devices[0])
    with pytest.raises(PointFault, match="'v'"):
        values.value(pts["v"])
    with pytest.raises(PointFault):
        values.write(pts["v"], 1.0)
    assert values.value(pts["bess.p"]) == 0.0


IEC104 = """
devices:
  - id: rtu
    protocol: iec104
    connection: {host: 127.0.0.1, port: 2404}
    points:
      - {id: m, address: 1/100/M_ME_NC_1, unit: V}
      - {id: sp, address: 1/200/C_SE_NC_1, unit: KiloW, direction: write}
"""


def test_iec104_serves_points_without_der(tmp_path: Path) -> None:
    config = loaded(tmp_path, IEC104)
    front = Iec104FrontEnd(config.devices[0], grid_of(config), "127.0.0.1", 0)
    pts = points(config.devices[0])
    assert front.apply_command(pts["sp"], 7.5) == ""
    assert front.values.value(pts["sp"]) == 7.5
    assert front.values.value(pts["m"]) == pytest.approx(230.0, abs=2.5)


DLMS = """
devices:
  - id: meter
    protocol: dlms
    connection: {host: 127.0.0.1, port: 4059}
    points:
      - {id: e, address: 3/1.0.1.8.0.255/2, unit: KiloW-HR, quantity: energy_import}
      - {id: v, address: 3/1.0.32.7.0.255/2, unit: V}
"""


def test_dlms_meter_serves_points_without_der(tmp_path: Path) -> None:
    config = loaded(tmp_path, DLMS)
    meter = Meter(config.devices[0], grid_of(config))
    registers = {o.logicalName: o for o in meter.objects.values()}
    assert registers["1.0.1.8.0.255"].value >= 10_000  # Wh: the counter starts at 10 kWh
    assert registers["1.0.32.7.0.255"].value > 0


IEC61850 = """
devices:
  - id: ied
    protocol: iec61850
    connection: {host: 127.0.0.1, port: 1}
    points:
      - {id: hz, address: LD0/MMXU1.Hz.mag.f@MX, unit: HZ}
      - {id: w, address: LD0/MMXU1.TotW.mag.f@MX, unit: W, quantity: active_power}
"""


async def test_iec61850_serves_points_without_der(tmp_path: Path) -> None:
    config = loaded(tmp_path, IEC61850)
    front = Iec61850FrontEnd(config.devices[0], grid_of(config), "127.0.0.1", free_port())
    await front.start()
    try:
        served = {s.point.id: s for s in front._served}
        assert all(s.known for s in served.values())
        assert front._current(served["hz"]) == pytest.approx(50.0, abs=0.1)
        assert front._current(served["w"]) == pytest.approx(2000.0, abs=1000.0)
    finally:
        await front.stop()
