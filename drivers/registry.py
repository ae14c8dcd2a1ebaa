"""Which driver serves which protocol: the one its `ProtocolSpec` names (registered through
the `mgms.protocols` entry points). Imports are lazy so only used libraries load."""

from __future__ import annotations

from drivers.base import Driver
from gateway.mapping import Device
from gateway.protocols import spec_for
from gateway.protocols.base import load_class


def create_driver(device: Device) -> Driver:
    target = spec_for(device.protocol).driver
    if target is None:
        raise ValueError(f"device {device.id!r}: no driver for protocol {device.protocol!r}")
    driver = load_class(target)(device)
    assert isinstance(driver, Driver)
    return driver
