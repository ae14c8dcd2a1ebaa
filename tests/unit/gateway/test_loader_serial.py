"""Serial lines in mapping files (Modbus RTU): good settings load typed, bad ones are named
by file, line, device and field, and one line belongs to one device."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.connection import SerialLine
from gateway.loader import check_files, load_mappings

RTU_DEVICE = """
devices:
  - id: line1
    protocol: modbus
    connection:
      serial: {%s}
    points:
      - {id: a, address: %s/holding/1, type: int16, unit: KiloW}
      - {id: b, address: 2/input/1, type: int16, unit: KiloW}
"""


def rtu_mapping(tmp_path: Path, serial: str, unit: int = 1, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(RTU_DEVICE % (serial, unit)), encoding="utf-8")
    return path


def test_good_line_loads_typed(tmp_path: Path) -> None:
    path = rtu_mapping(tmp_path, "port: /dev/ttyUSB0, baudrate: 19200, parity: even")
    (mapping,) = load_mappings([path]).values()
    (device,) = mapping.devices
    assert device.connection.serial == SerialLine(
        port="/dev/ttyUSB0", baudrate=19200, parity="E", stopbits=1, bytesize=8
    )
    assert str(device.connection.serial) == "/dev/ttyUSB0 (19200 8E1)"
    assert device.connection.serial.char_bits == 11  # start, 8 data, parity, stop


def test_defaults_are_9600_8n1(tmp_path: Path) -> None:
    (mapping,) = load_mappings([rtu_mapping(tmp_path, "port: /dev/ttyS1")]).values()
    line = mapping.devices[0].connection.serial
    assert line is not None
    assert (line.baudrate, line.bytesize, line.parity, line.stopbits) == (9600, 8, "N", 1)
    assert line.char_bits == 10


@pytest.mark.parametrize(
    ("serial", "field", "needle"),
    [
        ("port: /dev/ttyS1, baudrate: 9660", "baudrate", "9660 is not a standard rate"),
        ("port: /dev/ttyS1, baudrate: 0", "baudrate", "not a standard rate"),
        ("port: /dev/ttyS1, parity: X", "parity", "N (none), E (even) or O (odd)"),
        ("port: /dev/ttyS1, parity: mark", "parity", "not 'mark'"),
        ("port: /dev/ttyS1, stopbits: 3", "stopbits", "1 or 2, not 3"),
        ("port: /dev/ttyS1, stopbits: 1.5", "stopbits", "integer"),
        ("port: /dev/ttyS1, bytesize: 9", "bytesize", "5..8 data bits, not 9"),
        ("port: /dev/ttyS1, bytesize: 7", "bytesize", "Modbus RTU sends 8 data bits, not 7"),
        ("port: '', baudrate: 9600", "port", "at least 1 character"),
        ("baudrate: 9600", "port", "Field required"),
        ("port: /dev/ttyS1, flow: rtscts", "flow", "Extra"),
    ],
)
def test_bad_serial_setting_is_named(tmp_path: Path, serial: str, field: str, needle: str) -> None:
    path = rtu_mapping(tmp_path, serial)
    problems = check_files([path])
    assert len(problems) == 1, problems
    (p,) = problems
    assert (p.file, p.device, p.point) == (str(path), "line1", None)
    assert p.field == f"connection.serial.{field}"
    assert p.line == 6  # the `serial:` line (its settings are written inline)
    assert needle in p.message
    assert str(p).startswith(f"{path}:6, device 'line1', field 'connection.serial.{field}': ")


def test_every_bad_setting_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        textwrap.dedent(
            """
            devices:
              - id: line1
                protocol: modbus
                connection:
                  serial:
                    port: /dev/ttyS1
                    baudrate: 1000
                    parity: Q
                    stopbits: 0
                points: []
            """
        )
    )
    problems = check_files([path])
    assert [(p.field, p.line) for p in problems] == [
        ("connection.serial.baudrate", 8),
        ("connection.serial.parity", 9),
        ("connection.serial.stopbits", 10),
    ]


def test_broadcast_unit_on_a_serial_line(tmp_path: Path) -> None:
    path = rtu_mapping(tmp_path, "port: /dev/ttyS1", unit=0)
    (p,) = check_files([path])
    assert (p.device, p.point, p.field, p.line) == ("line1", "a", "address", 8)
    assert "unit 0 is the broadcast address" in p.message
    # over TCP unit 0 is an ordinary unit id (many TCP devices answer only to it)
    tcp = tmp_path / "tcp.yaml"
    tcp.write_text(
        textwrap.dedent(RTU_DEVICE % ("port: x", 0)).replace("serial: {port: x}", "host: 127.0.0.1")
    )
    assert check_files([tcp]) == []


def test_host_and_serial_together(tmp_path: Path) -> None:
    path = rtu_mapping(tmp_path, "port: /dev/ttyS1")
    path.write_text(path.read_text().replace("connection:", "connection:\n      host: 10.0.0.1"))
    (p,) = check_files([path])
    assert (p.device, p.field) == ("line1", "connection")
    assert "either host or serial" in p.message


def test_one_device_per_serial_line(tmp_path: Path) -> None:
    first = rtu_mapping(tmp_path, "port: /dev/ttyUSB0", name="a.yaml")
    second = tmp_path / "b.yaml"
    second.write_text(
        textwrap.dedent(RTU_DEVICE % ("port: /dev/ttyUSB0, baudrate: 19200", 3))
        .replace("line1", "line2")
        .replace("id: a,", "id: c,")
        .replace("id: b,", "id: d,")
    )
    problems = check_files([first, second])
    assert len(problems) == 1, problems
    (p,) = problems
    assert (p.file, p.line, p.device, p.field) == (
        str(second),
        6,
        "line2",
        "connection.serial.port",
    )
    assert "/dev/ttyUSB0 is already the line of device 'line1'" in p.message
    assert f"{first}:6" in p.message
    assert "map every unit of the line in that device" in p.message


def test_mgms_check_reports_serial_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rtu_mapping(tmp_path, "port: /dev/ttyS1, parity: X, bytesize: 7")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:6, device 'line1', field 'connection.serial.parity'" in err
    # bytesize 7 is a valid serial format, wrong only for Modbus RTU: reported once the
    # generic settings are right
    assert "1 problem(s) found" in err
