"""A driver typed by its protocol's models refuses a device of another protocol, naming
the device (and the point), instead of failing later on an attribute."""

from __future__ import annotations

import pytest

from drivers.modbus.driver import ModbusDriver
from drivers.modbus.protocol import ModbusAddress, ModbusOptions
from gateway.loader import load_config
from gateway.mapping import Device
from tests.support.procs import DEMO_CONFIG


def demo_device(device_id: str) -> Device:
    return next(d for d in load_config(DEMO_CONFIG).devices if d.id == device_id)


def test_a_device_of_its_protocol_reads_typed() -> None:
    device = demo_device("bess1-inverter")
    driver = ModbusDriver(device)
    assert isinstance(driver.options, ModbusOptions)
    point = device.points[0]
    assert driver.address(point) == device.address_of(point.id)
    assert isinstance(driver.address(point), ModbusAddress)


def test_options_of_another_protocol_are_refused() -> None:
    with pytest.raises(TypeError, match=r"device 'chp1-rtu': options are Iec104Options, not Mod"):
        ModbusDriver(demo_device("chp1-rtu"))


def test_an_address_of_another_protocol_is_refused() -> None:
    device = demo_device("chp1-rtu")
    driver = ModbusDriver(device, options=ModbusOptions())
    point = device.points[0]
    with pytest.raises(TypeError, match=rf"point '{point.id}': address .* not ModbusAddress"):
        driver.address(point)
