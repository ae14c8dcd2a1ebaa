"""The Modbus transports: which client a device gets, with what settings and timing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers.base import Driver
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.protocol import ModbusOptions
from drivers.modbus.transport import client_for, frame_gap, line_timing, longest_answer
from gateway.connection import SerialLine
from gateway.errors import LinkError, RequestTimeout
from gateway.loader import load_mappings
from gateway.mapping import Device


def device(connection: dict[str, Any], timeout: float = 1.0) -> Device:
    return Device.model_validate(
        {"id": "d1", "protocol": "modbus", "connection": connection, "timeout": timeout}
    )


def test_frame_gap_is_three_and_a_half_characters() -> None:
    # 9600 8N1: 10 bits a character, 1.042 ms; t3.5 = 3.65 ms
    assert frame_gap(SerialLine(port="p", baudrate=9600)) == pytest.approx(3.5 * 10 / 9600)
    # 19200 8E1: 11 bits a character
    even = SerialLine(port="p", baudrate=19200, parity="E")
    assert frame_gap(even) == pytest.approx(3.5 * 11 / 19200)
    # above 19200 baud the standard fixes it at 1.75 ms
    assert frame_gap(SerialLine(port="p", baudrate=38400)) == 0.00175
    assert frame_gap(SerialLine(port="p", baudrate=115200)) == 0.00175


def test_request_timeout_adds_the_wire_time_of_the_longest_exchange() -> None:
    options = ModbusOptions()
    assert longest_answer(options) == 255  # 125 registers: 5 + 250 bytes
    assert longest_answer(ModbusOptions(max_registers=10, max_bits=80)) == 25
    slow = device({"serial": {"port": "/dev/ttyS1", "baudrate": 9600}}, timeout=0.5)
    timing = line_timing(slow, options)
    # 17 characters out (the longest write), 255 back, 10 bits each, at 9600 bit/s
    assert timing.request_timeout == pytest.approx(0.5 + (17 + 255) * 10 / 9600)
    assert timing.frame_gap == pytest.approx(3.5 * 10 / 9600)
    # smaller reads: less to wait for
    short = line_timing(slow, ModbusOptions(max_registers=10, max_bits=80))
    assert short.request_timeout == pytest.approx(0.5 + (17 + 25) * 10 / 9600)
    fast = device({"serial": {"port": "/dev/ttyS1", "baudrate": 115200}}, timeout=0.5)
    assert line_timing(fast, options).request_timeout < timing.request_timeout


def test_tcp_has_no_gap_and_the_device_timeout() -> None:
    timing = line_timing(device({"host": "127.0.0.1", "port": 1502}, 0.7), ModbusOptions())
    assert (timing.request_timeout, timing.frame_gap) == (0.7, 0.0)


async def test_serial_device_gets_an_rtu_client_with_the_line_settings() -> None:
    dev = device(
        {"serial": {"port": "/dev/ttyS7", "baudrate": 19200, "parity": "O", "stopbits": 2}}
    )
    client = client_for(dev)
    assert isinstance(client, AsyncModbusSerialClient)
    params = client.comm_params
    assert (params.host, params.baudrate, params.parity, params.stopbits, params.bytesize) == (
        "/dev/ttyS7",
        19200,
        "O",
        2,
        8,
    )
    assert params.timeout_connect is None  # untimed: the driver times its requests
    assert params.reconnect_delay == 0  # the gateway reconnects, not pymodbus
    assert type(client.ctx.framer).__name__ == "FramerRTU"
    assert client.ctx.retries == 0


async def test_tcp_device_gets_a_tcp_client() -> None:
    client = client_for(device({"host": "127.0.0.1", "port": 1502}))
    assert isinstance(client, AsyncModbusTcpClient)
    assert (client.comm_params.host, client.comm_params.port) == ("127.0.0.1", 1502)
    assert client.comm_params.timeout_connect is None


async def test_a_request_runs_one_timer_the_drivers_own(tmp_path: Path) -> None:
    """A device that takes the connection and never answers: while the request waits,
    one timer is armed for it (the driver's; pymodbus's client keeps none), and that timer
    ends it as the device timeout says."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    path = tmp_path / "silent.yaml"
    path.write_text(
        "devices:\n  - {id: silent, protocol: modbus, timeout: 1.0,\n"
        f"     connection: {{host: 127.0.0.1, port: {port}}},\n"
        "     points: [{id: p, address: 1/holding/0, type: int16, unit: KiloW}]}\n"
    )
    (mapping,) = load_mappings([path]).values()
    (dev,) = mapping.devices
    (point,) = dev.points
    driver = ModbusDriver(dev)
    try:
        await driver.connect()
        before = {id(h) for h in loop._scheduled if not h.cancelled()}  # type: ignore[attr-defined]
        started = loop.time()
        reading = asyncio.ensure_future(driver.read([point]))
        await asyncio.sleep(0.05)  # well inside the timeout, even on a loaded machine
        armed = [
            h
            for h in loop._scheduled  # type: ignore[attr-defined]
            if not h.cancelled() and id(h) not in before and h.when() > loop.time()
        ]
        with pytest.raises(RequestTimeout, match=r"no answer within 1 s"):
            await reading
        assert len(armed) == 1, armed
        assert 0.95 < loop.time() - started < 3.0
    finally:
        await driver.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def test_driver_times_its_requests_by_its_own_options() -> None:
    dev = device({"serial": {"port": "/dev/ttyS1", "baudrate": 9600}}, timeout=0.5)
    narrow = ModbusDriver(dev, options=ModbusOptions(max_registers=10, max_bits=80))
    assert narrow.timing == line_timing(dev, ModbusOptions(max_registers=10, max_bits=80))
    assert narrow.timing.request_timeout < ModbusDriver(dev).timing.request_timeout


async def test_missing_port_is_a_link_error_naming_the_line() -> None:
    driver = ModbusDriver(device({"serial": {"port": "/nonexistent/ttyS9"}}))
    with pytest.raises(LinkError) as info:
        await driver.connect()
    assert "cannot open serial port /nonexistent/ttyS9 (9600 8N1)" in str(info.value)
    assert not driver.connected


def test_read_budget_covers_every_request_waiting_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "line.yaml"
    path.write_text(
        """
devices:
  - id: line
    protocol: modbus
    connection: {serial: {port: /dev/ttyS1, baudrate: 9600}}
    timeout: 0.5
    points:
      - {id: a, address: 1/holding/0, type: int16, unit: KiloW}
      - {id: b, address: 2/holding/0, type: int16, unit: KiloW}
      - {id: c, address: 3/input/0, type: float32, unit: KiloW}
"""
    )
    (mapping,) = load_mappings([path]).values()
    (dev,) = mapping.devices
    driver = ModbusDriver(dev)
    assert len(driver.plan(dev.points)) == 3
    budget = driver.read_budget(dev.points)
    # three units that each take their full timeout, and the halves of a split of each
    assert budget > 2 * 3 * (driver.timing.request_timeout + driver.timing.frame_gap)
    assert budget > Driver.read_budget(driver, dev.points)  # more than the generic guess


async def test_a_refused_connection_says_so() -> None:
    with socket.socket() as held:  # a port nothing listens on
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        driver = ModbusDriver(device({"host": "127.0.0.1", "port": port}))
        with pytest.raises(LinkError, match=f"cannot connect to 127.0.0.1:{port}: refused"):
            await driver.connect()
