"""Which driver serves which protocol. Imports are lazy so only used libraries load."""

from __future__ import annotations

import importlib

from drivers.base import Driver
from gateway.mapping import Device

#: protocol name -> "module:ClassName"
DRIVERS: dict[str, str] = {
    "dlms": "drivers.dlms.driver:DlmsDriver",
    "iec104": "drivers.iec104.driver:Iec104Driver",
    "iec61850": "drivers.iec61850.driver:Iec61850Driver",
    "modbus": "drivers.modbus.driver:ModbusDriver",
}


def create_driver(device: Device) -> Driver:
    target = DRIVERS.get(device.protocol)
    if target is None:
        raise ValueError(f"device {device.id!r}: no driver for protocol {device.protocol!r}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    driver = cls(device)
    assert isinstance(driver, Driver)
    return driver
