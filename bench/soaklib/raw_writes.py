"""Raw set-point write round trips of the four field protocols: bare library clients, no
gateway, against running simulators; the floor of bench/latency.py, run in its own process
so that blocking library calls (pyiec61850 holds the GIL) never share an interpreter with
the gateway under measurement.

Each write sends a set point the way the gateway's driver does and waits for what the
driver waits for, minus what only a gateway needs:
- modbus: pymodbus `write_registers` of the float32 and its echo;
- iec104: c104 `transmit()` of the set-point command until its activation confirmation;
- iec61850: pyiec61850 select-with-value, operate and the CommandTermination of the APC
  control (SBO, enhanced security), as the driver confirms it (bench.iec61850.RawControl).
  This client is one more association on the IED beside the gateway's; the library's
  server is slower for every client while several are open (docs/iec61850.md, "Control
  latency"), so this floor carries that cost as the gateway's writes do;
- dlms: gurux SET of the register value on an association kept open (the session layer
  bench/dlms.py also uses for its floor).

Usage: `python -m bench.soaklib.raw_writes CONFIG PORTS_JSON TARGETS_JSON ROUNDS`, where TARGETS
maps protocol to [point id, value]; prints one JSON line: per protocol the seconds of
each confirmed write and the count of writes not confirmed.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import c104
import pyiec61850.pyiec61850 as iec
from pymodbus.client import ModbusTcpClient

from bench.dlms import raw_session
from bench.iec104 import RawClient
from bench.iec61850 import RawControl, raw_connect
from bench.iec61850 import Refused as ControlRefused
from drivers.base import to_raw
from drivers.dlms.protocol import DlmsAddress
from drivers.dlms.session import Got
from drivers.iec104.protocol import Iec104Address
from drivers.iec61850.protocol import Iec61850Address
from drivers.modbus.protocol import ModbusAddress
from gateway.loader import load_config
from gateway.mapping import Device, Point


class Refused(Exception):
    """The device did not confirm one write (counted, not timed)."""


def _timed(rounds: int, write: Callable[[], None]) -> dict[str, object]:
    """Seconds of each confirmed write, and how many were not confirmed."""
    with contextlib.suppress(Refused):
        write()  # warm up: first request after a connect
    seconds: list[float] = []
    refused: list[str] = []
    for _ in range(rounds):
        started = time.perf_counter()
        try:
            write()
        except Refused as exc:
            refused.append(str(exc))
            continue
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds, "refused": len(refused), "examples": refused[:3]}


def modbus(device: Device, point: Point, value: float, rounds: int) -> dict[str, object]:
    address = device.address_of(point.id)
    assert isinstance(address, ModbusAddress) and address.data_type.name.lower() == "float32"
    words = list(struct.unpack(">HH", struct.pack(">f", float(to_raw(point, value)))))
    client = ModbusTcpClient(device.connection.host or "127.0.0.1", port=device.connection.port)
    if not client.connect():
        raise SystemExit(f"modbus: no connection to {device.id}")

    def write() -> None:
        answer = client.write_registers(address.address, words, device_id=address.unit)
        if answer.isError():
            raise Refused(str(answer))

    try:
        return _timed(rounds, write)
    finally:
        client.close()


def iec104(device: Device, point: Point, value: float, rounds: int) -> dict[str, object]:
    address = device.address_of(point.id)
    assert isinstance(address, Iec104Address) and address.command is not None
    port = device.connection.port
    assert port is not None
    client = RawClient(port, [address])
    client.start()
    command = client.commands[address.command.ioa]

    def write() -> None:
        command.value = float(to_raw(point, value))
        if not command.transmit(cause=c104.Cot.ACTIVATION):
            raise Refused("no activation confirmation")

    try:
        return _timed(rounds, write)
    finally:
        client.client.stop()


def iec61850(device: Device, point: Point, value: float, rounds: int) -> dict[str, object]:
    address = device.address_of(point.id)
    assert isinstance(address, Iec61850Address) and address.is_control
    port = device.connection.port
    assert port is not None
    con = raw_connect(port)
    control = RawControl(con, str(address.obj))

    def write() -> None:
        try:
            control(float(to_raw(point, value)))
        except ControlRefused as exc:
            raise Refused(str(exc)) from None

    try:
        return _timed(rounds, write)
    finally:
        control.close()
        iec.IedConnection_close(con)
        iec.IedConnection_destroy(con)


def dlms(device: Device, point: Point, value: float, rounds: int) -> dict[str, object]:
    address = device.address_of(point.id)
    assert isinstance(address, DlmsAddress)
    session = raw_session(device)
    got = session.read(address)
    assert isinstance(got, Got) and got.data_type is not None
    data_type = int(got.data_type)
    raw = got.value  # the register's own value back: a write that changes nothing

    def write() -> None:
        if not isinstance(session.set(address, raw, data_type), Got):
            raise Refused("set refused")

    try:
        return _timed(rounds, write)
    finally:
        session.close()


WRITERS = {"modbus": modbus, "iec104": iec104, "iec61850": iec61850, "dlms": dlms}


def main() -> None:
    config_path, ports, targets, rounds = sys.argv[1:5]
    config = load_config(Path(config_path), port_overrides=json.loads(ports))
    out: dict[str, dict[str, object]] = {}
    for protocol, (point_id, value) in json.loads(targets).items():
        mapped = next((d, p) for d in config.devices for p in d.points if p.id == point_id)
        out[protocol] = WRITERS[protocol](*mapped, float(value), int(rounds))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
