"""How the Modbus driver reaches a device: a pymodbus client for TCP or for RTU on a serial
line, and the timing each needs.

On a serial line (RTU) a frame ends with 3.5 character times of silence, so the driver
keeps that gap before every request; above 19200 baud the standard fixes the gap at
1.75 ms. The device `timeout` is the time the device may take to turn a request round; on
a serial line the time the longest request and answer spend on the wire at the line's
speed is added, so a slow line does not turn a large read into a timeout (125 registers
take 0.27 s to arrive at 9600 baud).

pymodbus's own reconnect and retries are off: the gateway's device session reconnects.
So is its own timer: the clients wait for an answer (and a connection) without one, and
the driver times every request and every connect itself (`ModbusDriver._call`). pymodbus
would otherwise arm a second timer for each request, under the driver's: on Python 3.11
its `wait_for` cost about 18 us of a request's 170-190 here (`bench/scale.py` reads 180
requests a second at 10,000 points).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient

from drivers.modbus.answers import decode_registers_at_once
from drivers.modbus.protocol import ModbusOptions
from gateway.connection import SerialLine
from gateway.mapping import Device

ClientFactory = Callable[[Device], ModbusBaseClient]
"""Builds the client of a device (untimed: the driver times its requests)."""

#: pymodbus's timeout for a client that keeps no timer: its `wait_for(..., None)` waits
#: for the answer as it is (typed float by pymodbus, which reads None as "no timeout")
_UNTIMED: Any = None

#: the inter-frame gap the RTU standard fixes above 19200 baud
_FAST_LINE_GAP_S = 0.00175
#: characters of the longest request the driver sends: write multiple registers of a
#: float64 (address, function, start, count, byte count, 8 data bytes, CRC)
_LONGEST_REQUEST = 17
#: characters around the data of a read answer: address, function, byte count, CRC
_ANSWER_OVERHEAD = 5


@dataclass(frozen=True)
class LineTiming:
    #: how long the driver waits for the answer to one request
    request_timeout: float
    #: silence kept between the end of one exchange and the next request
    frame_gap: float


def frame_gap(line: SerialLine) -> float:
    """t3.5 of the RTU standard: 3.5 character times, 1.75 ms above 19200 baud."""
    if line.baudrate > 19200:
        return _FAST_LINE_GAP_S
    return 3.5 * line.char_bits / line.baudrate


def longest_answer(options: ModbusOptions) -> int:
    """Characters of the largest read answer the read plan can ask for."""
    data = max(2 * options.max_registers, math.ceil(options.max_bits / 8))
    return _ANSWER_OVERHEAD + data


def line_timing(device: Device, options: ModbusOptions) -> LineTiming:
    line = device.connection.serial
    if line is None:
        return LineTiming(request_timeout=device.timeout, frame_gap=0.0)
    wire = (_LONGEST_REQUEST + longest_answer(options)) * line.char_bits / line.baudrate
    return LineTiming(request_timeout=device.timeout + wire, frame_gap=frame_gap(line))


def tcp_client(device: Device) -> ModbusBaseClient:
    """A Modbus TCP client for the device's host and port (502 by default)."""
    conn = device.connection
    assert conn.host is not None
    return AsyncModbusTcpClient(
        conn.host,
        port=conn.port if conn.port is not None else 502,
        name=device.id,
        timeout=_UNTIMED,
        retries=0,
        reconnect_delay=0,  # no background reconnect task: the gateway's session decides
    )


def serial_client(device: Device) -> ModbusBaseClient:
    """A Modbus RTU client on the device's serial line, character format from the mapping."""
    line = device.connection.serial
    assert line is not None
    return AsyncModbusSerialClient(
        line.port,
        baudrate=line.baudrate,
        parity=line.parity,
        stopbits=line.stopbits,
        bytesize=line.bytesize,
        name=device.id,
        timeout=_UNTIMED,
        retries=0,
        reconnect_delay=0,
    )


def client_for(device: Device) -> ModbusBaseClient:
    """The client the device's connection asks for: RTU on a serial line, else TCP (register
    answers decoded at once either way: `drivers.modbus.answers`)."""
    if device.connection.serial is not None:
        return decode_registers_at_once(serial_client(device))
    return decode_registers_at_once(tcp_client(device))
