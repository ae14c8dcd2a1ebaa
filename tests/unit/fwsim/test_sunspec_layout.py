"""The simulator's SunSpec layout: marker, headers, scale factors from the mapping, and
mappings that cannot be a SunSpec device refused at start naming the point."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwsim.sunspec_layout import LayoutError, layout_words
from gateway.loader import load_mappings
from gateway.mapping import Device
from gateway.protocols.modbus import ModbusOptions

SHIPPED = Path(__file__).resolve().parents[3] / "mappings" / "demo" / "sunspec.yaml"


def device_with(tmp_path: Path, point: str) -> Device:
    path = tmp_path / "m.yaml"
    path.write_text(
        "devices:\n"
        "  - id: inv\n"
        "    protocol: modbus\n"
        "    connection: {host: 127.0.0.1, port: 1502}\n"
        "    options: {sunspec: [{unit: 1, base: 40000, models: [1, 103]}]}\n"
        f"    points:\n      - {point}\n"
    )
    (mapping,) = load_mappings([path]).values()
    return mapping.devices[0]


def test_shipped_layout_has_marker_headers_and_scale_factors() -> None:
    (mapping,) = load_mappings([SHIPPED]).values()
    device = mapping.devices[0]
    options = device.typed_options
    assert isinstance(options, ModbusOptions)
    words = layout_words(device, options.sunspec[0])
    assert [words[40000], words[40001]] == [0x5375, 0x6E53]  # "SunS"
    assert [words[40002], words[40003]] == [1, 66]
    assert [words[40070], words[40071]] == [103, 50]
    assert words[40085] == 1  # W_SF: int16 x 0.01 kW is 10 W a count
    assert words[40089] == 0x8000  # VA_SF: no VA point mapped, "not implemented"
    assert [words[40122], words[40148]] == [123, 124]
    assert words[40148 + 22] == (-1) & 0xFFFF  # ChaState_SF for uint16 x 0.1 %
    assert [words[40174], words[40175]] == [0xFFFF, 0]


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (
            "{id: p, address: 1/holding/40084, type: int16, scale: 0.03, unit: KiloW}",
            "point 'p' (SunSpec 103.W): scale 0.03 is no SunSpec scale factor",
        ),
        (
            "{id: p, address: 1/holding/40084, type: float32, unit: KiloW}",
            "point 'p' (SunSpec 103.W): type float32, the model says int16",
        ),
        (
            "{id: p, address: 1/holding/40084, type: int16, unit: V}",
            "point 'p' (SunSpec 103.W): unit V is not the model's W",
        ),
    ],
)
def test_a_mapping_that_is_no_sunspec_device_is_refused(
    tmp_path: Path, point: str, message: str
) -> None:
    device = device_with(tmp_path, point)
    options = device.typed_options
    assert isinstance(options, ModbusOptions)
    with pytest.raises(LayoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layout_words(device, options.sunspec[0])
