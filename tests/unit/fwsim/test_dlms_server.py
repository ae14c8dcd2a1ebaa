"""The simulated meter's behaviour on the physics model, stepped by hand, and the gurux
server shims it relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient
from gurux_dlms.enums import DataType
from gurux_dlms.objects import GXDLMSDisconnectControl, GXDLMSLimiter
from gurux_dlms.objects.enums import ControlState
from gurux_dlms.ValueEventArgs import ValueEventArgs

from fwsim.dlms_server import PROFILE_PERIOD_S, Meter
from fwsim.dlms_shims import AareSafeBuffer, Register, install
from fwsim.physics import Microgrid
from gateway.config import LoadedConfig
from gateway.loader import load_config
from gateway.mapping import Quantity
from tests.support.handclock import HandClock

DEMO = Path(__file__).resolve().parents[3] / "config" / "demo.yaml"
T0 = datetime(2026, 6, 1, 0, 10, tzinfo=UTC)  # night: no PV


@pytest.fixture
def config() -> LoadedConfig:
    return load_config(DEMO)


def build(config: LoadedConfig, device_id: str) -> tuple[Meter, Microgrid, HandClock]:
    clock = HandClock(T0)
    grid = Microgrid.build(config.gateway.ders, config.gateway.coupling_point, clock)
    device = next(d for d in config.devices if d.id == device_id)
    return Meter(device, grid), grid, clock


def advance(meter: Meter, grid: Microgrid, clock: HandClock, seconds: float) -> None:
    clock.seconds += seconds
    grid.step()
    meter.refresh()


def register(meter: Meter, obis: str) -> Register:
    return next(
        o for o in meter.objects.values() if o.logicalName == obis and isinstance(o, Register)
    )


def test_registers_hold_integers_in_meter_units(config: LoadedConfig) -> None:
    meter, grid, clock = build(config, "pcc-billing-meter")
    advance(meter, grid, clock, 60)
    p = register(meter, "1.0.16.7.0.255")
    assert p.value == round(grid.meter.p_kw * 1000)  # W, scaler 0
    assert (p.exponent, p.unit) == (0, 27)
    energy = register(meter, "1.0.1.8.0.255")
    assert energy.value == round(grid.meter.import_kwh * 1000)  # Wh
    assert meter.clock.time.value == T0 + timedelta(seconds=60)


def test_profile_captures_each_period_with_interpolated_counters(config: LoadedConfig) -> None:
    meter, grid, clock = build(config, "pcc-billing-meter")
    assert meter.profile is not None
    buffer = meter.profile.obj.buffer
    advance(meter, grid, clock, 60)  # 00:11
    assert buffer == []
    start = register(meter, "1.0.1.8.0.255").value
    advance(meter, grid, clock, 40 * 60)  # 00:51 in one step: three boundaries
    end = register(meter, "1.0.1.8.0.255").value
    times = [row[0].value for row in buffer]
    assert times == [T0.replace(minute=m) for m in (15, 30, 45)]
    imports = [row[1] for row in buffer]
    # constant power over the step: counters grow linearly, 15 of 40 minutes per period
    per_period = (end - start) * PROFILE_PERIOD_S / (40 * 60)
    assert imports[1] - imports[0] == pytest.approx(per_period, abs=1)
    assert imports[2] - imports[1] == pytest.approx(per_period, abs=1)
    assert imports[0] == pytest.approx(start + (end - start) * 4 / 40, abs=1)
    assert meter.profile.obj.entriesInUse == 3
    assert [obj.logicalName for obj, _ in meter.profile.columns] == [
        "0.0.1.0.0.255",
        "1.0.1.8.0.255",
        "1.0.2.8.0.255",
        "1.0.3.8.0.255",
        "1.0.4.8.0.255",
    ]


def test_customer_meter_integrates_energy_the_load_model_does_not_count(
    config: LoadedConfig,
) -> None:
    meter, grid, clock = build(config, "load1-customer-meter")
    advance(meter, grid, clock, 1)
    power_w = register(meter, "1.0.1.7.0.255").value
    assert power_w > 0  # import power of the load, positive on the meter
    before = register(meter, "1.0.1.8.0.255").value
    for _ in range(10):  # ten minutes in one-minute steps
        advance(meter, grid, clock, 60)
    gained = register(meter, "1.0.1.8.0.255").value - before
    assert gained == pytest.approx(power_w * 600 / 3600, rel=0.05)


def test_disconnector_switches_the_der(config: LoadedConfig) -> None:
    meter, grid, clock = build(config, "load1-customer-meter")
    dc = next(o for o in meter.objects.values() if isinstance(o, GXDLMSDisconnectControl))
    assert meter.invoke(dc, 1)
    advance(meter, grid, clock, 1)
    assert (dc.controlState, dc.outputState) == (ControlState.DISCONNECTED, False)
    assert grid.value("load1", Quantity.STATUS) == 0.0
    assert register(meter, "1.0.1.7.0.255").value == 0
    assert meter.invoke(dc, 2)
    advance(meter, grid, clock, 1)
    assert dc.outputState and grid.value("load1", Quantity.STATUS) == 1.0
    assert register(meter, "1.0.1.7.0.255").value > 0


def test_limiter_trips_only_after_the_minimum_duration(config: LoadedConfig) -> None:
    meter, grid, clock = build(config, "load1-customer-meter")
    limiter = next(o for o in meter.objects.values() if isinstance(o, GXDLMSLimiter))
    dc = next(o for o in meter.objects.values() if isinstance(o, GXDLMSDisconnectControl))
    advance(meter, grid, clock, 1)
    limiter.thresholdNormal = register(meter, "1.0.1.7.0.255").value - 1000  # 1 kW below
    meter.written(limiter, 4)
    assert limiter.thresholdActive == limiter.thresholdNormal
    limiter.minOverThresholdDuration = 120
    advance(meter, grid, clock, 60)  # over since now
    advance(meter, grid, clock, 60)  # 60 s over: not yet
    assert dc.outputState
    advance(meter, grid, clock, 61)
    assert dc.controlState == ControlState.READY_FOR_RECONNECTION and not dc.outputState
    advance(meter, grid, clock, 1)
    assert grid.value("load1", Quantity.ACTIVE_POWER) == 0.0


def test_access_rights(config: LoadedConfig) -> None:
    from gurux_dlms.enums import AccessMode, MethodAccessMode

    meter, _, _ = build(config, "load1-customer-meter")
    limiter = next(o for o in meter.objects.values() if isinstance(o, GXDLMSLimiter))
    dc = next(o for o in meter.objects.values() if isinstance(o, GXDLMSDisconnectControl))
    assert meter.attribute_access(limiter, 3) == AccessMode.READ
    assert meter.attribute_access(limiter, 4) == AccessMode.READ_WRITE
    assert meter.attribute_access(register(meter, "1.0.1.8.0.255"), 2) == AccessMode.READ
    assert meter.method_access(dc, 1) == MethodAccessMode.ACCESS
    assert meter.method_access(dc, 3) == MethodAccessMode.NO_ACCESS


# --- shims ---------------------------------------------------------------------------------


def test_exact_scaler_encodes_positive_exponents() -> None:
    install()
    client = GXDLMSClient(True)
    reg = Register("1.0.1.8.0.255")
    reg.set_scaler(3, 30)
    encoded = reg.getValue(client.settings, ValueEventArgs(client.settings, reg, 3))
    # the library's own floor(log10(1000.0)) gives 2 here
    assert bytes(encoded) == bytes([DataType.STRUCTURE, 2, DataType.INT8, 3, DataType.ENUM, 30])


def test_aare_buffer_completes_the_responding_ap_title() -> None:
    buffer = AareSafeBuffer()
    for byte in (0xA4, 8, 0x04):
        buffer.setUInt8(byte)
    buffer.setUInt8()  # what generateAARE calls
    buffer.set(b"SIMMETER")
    assert bytes(buffer.array()) == bytes([0xA4, 10, 0x04, 8]) + b"SIMMETER"
    plain = GXByteBuffer()
    plain.setUInt8(7)
    buffer2 = AareSafeBuffer()
    buffer2.setUInt8(7)
    assert bytes(buffer2.array()) == bytes(plain.array())


def test_install_is_idempotent_and_fixes_the_event_args() -> None:
    install()
    install()
    client = GXDLMSClient(True)
    e = ValueEventArgs(client.settings, None, 2)
    assert list(e) == [e]
