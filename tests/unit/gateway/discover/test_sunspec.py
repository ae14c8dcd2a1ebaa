"""SunSpec discovery on register images: the chain walk, scale factors, roles, what is
left unmapped, the report for a device without SunSpec; and that a draft passes the
loader's checks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from gateway.discover import modbus as discover_modbus
from gateway.discover.draft import Draft, render
from gateway.discover.sunspec import DraftNames, discover_units, draft_unit, encode_string
from gateway.errors import DiscoveryError
from gateway.loader import check_files
from gateway.protocols.modbus import Table


class Refusal:
    detail = "modbus exception 2 (illegal data address)"


class Image:
    """Holding registers of units: address -> word; anything else is refused."""

    def __init__(self, units: dict[int, dict[int, int]]) -> None:
        self.units = units
        self.requests: list[tuple[int, Table, int, int]] = []

    async def read_words(self, unit: int, table: Table, address: int, count: int) -> object:
        self.requests.append((unit, table, address, count))
        words = self.units.get(unit)
        if words is None:
            return None
        span = range(address, address + count)
        if table is not Table.HOLDING or any(a not in words for a in span):
            return Refusal()
        return [words[a] for a in span]


def block(at: int, words: Iterable[int]) -> dict[int, int]:
    return {at + i: w for i, w in enumerate(words)}


def sunspec_image(base: int) -> dict[int, int]:
    """Marker, common model, 103 inverter (W = 1234 with W_SF -1, Hz with Hz_SF not
    implemented), 123 controls (WMaxLimPct = 800 with SF -1), a model without a
    definition, end. Offsets as the SunSpec specification gives them."""
    image = block(base, [0x5375, 0x6E53])
    at = base + 2
    common = [1, 66, *encode_string("Acme", 16), *encode_string("Hybrid 5", 16)]
    common += [0] * 8 + encode_string("2.1", 8) + encode_string("SN42", 16) + [1, 0]
    image |= block(at, common)
    at += 68
    inverter = [103, 50] + [0xFFFF] * 50
    for offset in range(2, 52):
        inverter[offset] = 0x8000  # int16 "not implemented" is enough for this test
    inverter[14], inverter[15] = 1234, (-1) & 0xFFFF  # W, W_SF
    inverter[16], inverter[17] = 5000, 0x8000  # Hz, Hz_SF not implemented
    inverter[36] = 4  # St (enum16) = MPPT
    image |= block(at, inverter)
    inverter_at = at
    at += 52
    controls = [123, 24] + [0xFFFF] * 24
    controls[5] = 800  # WMaxLimPct
    controls[23] = (-1) & 0xFFFF  # WMaxLimPct_SF
    image |= block(at, controls)
    at += 26
    image |= block(at, [64999, 3, 1, 2, 3])
    at += 5
    image |= block(at, [120, 28, *([0xFFFF] * 28)])  # nameplate, 2 registers longer
    at += 30
    image |= block(at, [0xFFFF, 0])
    image[-1] = inverter_at  # where the inverter model starts, for the test
    return image


async def test_walks_the_chain_and_drafts_points_with_scale_and_roles() -> None:
    image = sunspec_image(50000)
    inverter_at = image.pop(-1)
    reader = Image({1: image})
    (unit,) = await discover_units(reader, [1, 2])  # 2 is not there
    assert unit.base == 50000  # 40000 refused, 50000 has the marker
    assert [m.id for m in unit.models] == [1, 103, 123, 64999, 120]
    assert unit.common["Mn"] == "Acme" and unit.common["SN"] == "SN42"
    points, unmapped = draft_unit(unit, DraftNames("inv", "pv9"))
    by_name = {p.id.rsplit(".", 1)[1]: p.fields for p in points}
    w = by_name["W"]
    assert w["address"] == f"1/holding/{inverter_at + 14}"
    assert (w["type"], w["scale"], w["unit"]) == ("int16", 0.0001, "KiloW")
    assert (w["der"], w["quantity"]) == ("pv9", "active_power")
    limit = by_name["WMaxLimPct"]
    assert (limit["scale"], limit["unit"], limit["direction"]) == (0.1, "PERCENT", "read-write")
    assert limit["quantity"] == "active_power_limit" and limit["limits"] == {
        "min": 0.0,
        "max": 100.0,
    }
    assert by_name["St"]["quantity"] == "status" and "scale" not in by_name["St"]
    assert "Hz" not in by_name  # its scale factor is not implemented
    assert any("Hz (uint16): scale factor Hz_SF reads 'not implemented'" in u for u in unmapped)
    assert any("model 64999" in u and "no SunSpec definition" in u for u in unmapped)
    assert any(
        "model 120" in u and "2 registers beyond the model's definition" in u for u in unmapped
    )
    assert "VAr" not in by_name  # reads 'not implemented'
    comment = next(p.found_as for p in points if p.id.endswith(".W"))
    assert "W_SF = -1" in comment and "read 0.1234 KiloW" in comment
    # discovery reads only holding registers and never asks for more than 125
    assert all(t is Table.HOLDING and 1 <= n <= 125 for _, t, _, n in reader.requests)


async def test_draft_file_passes_the_mapping_checks(tmp_path: Path) -> None:
    image = sunspec_image(40000)
    image.pop(-1)
    target = discover_modbus.ModbusTarget("127.0.0.1", 1502)
    result = await discover_modbus.discover(Image({1: image}), target, origin="test", der="pv9")
    assert not isinstance(result, discover_modbus.RangeReport)
    assert result.devices[0].id == "hybrid-5"  # from the common model's Md
    path = tmp_path / "draft.yaml"
    path.write_text(render(result))
    assert check_files([path]) == []
    device = yaml.safe_load(path.read_text())["devices"][0]
    assert device["options"]["sunspec"] == [
        {"unit": 1, "base": 40000, "models": [1, 103, 123, 64999, 120]}
    ]
    assert "# 103 inverter_three_phase.W int16 W, W_SF = -1: read 0.1234 KiloW" in path.read_text()


async def test_device_without_sunspec_gets_a_range_report_not_a_mapping() -> None:
    holding = block(100, [7] * 200)
    reader = Image({1: holding})
    target = discover_modbus.ModbusTarget("127.0.0.1", 1502, units=(1, 5))
    report = await discover_modbus.discover(reader, target, origin="test")
    assert isinstance(report, discover_modbus.RangeReport)
    assert report.ranges[(1, Table.HOLDING)] == [(100, 300)]
    assert report.ranges[(1, Table.INPUT)] == []
    assert report.silent == [5]
    text = report.render()
    assert text.startswith("no SunSpec marker (40000, 50000, 0) on 127.0.0.1:1502, unit(s) 1, 5")
    assert "unit 1 holding: 100..299" in text and "unit 5: no answer" in text


async def test_a_chain_without_end_or_with_a_hole_is_an_error_naming_where() -> None:
    image = block(40000, [0x5375, 0x6E53, 103, 50])  # model 103 body missing
    with pytest.raises(DiscoveryError, match="unit 1: reading 50 registers at 40004"):
        await discover_units(Image({1: image}), [1])
    image = block(40000, [0x5375, 0x6E53, 65000, 65000])
    with pytest.raises(DiscoveryError, match="beyond the end of the register space"):
        await discover_units(Image({1: image}), [1])


async def test_a_register_block_off_the_usual_starts_is_found_with_its_bounds() -> None:
    reader = Image({1: block(40072, [7] * 41) | block(109, [1] * 8)})
    target = discover_modbus.ModbusTarget("127.0.0.1", 1502)
    report = await discover_modbus.discover(reader, target, origin="test")
    assert isinstance(report, discover_modbus.RangeReport)
    assert report.ranges[(1, Table.HOLDING)] == [(109, 117), (40072, 40113)]


async def test_a_meter_models_sign_is_left_to_check() -> None:
    image = block(40000, [0x5375, 0x6E53])
    common = [1, 66, *encode_string("Acme", 16), *encode_string("Meter", 16)]
    image |= block(
        40002, common + [0] * 8 + encode_string("1", 8) + encode_string("S", 16) + [1, 0]
    )
    length = 105  # model 203 (wye meter): L = 105
    meter = [203, length] + [0x8000] * length
    image |= block(40070, meter)
    image |= block(40070 + 2 + length, [0xFFFF, 0])
    target = discover_modbus.ModbusTarget("127.0.0.1", 1502)
    draft = await discover_modbus.discover(Image({1: image}), target, origin="t")
    assert isinstance(draft, Draft)
    assert any(
        r.startswith("meter model(s) 203: SunSpec does not fix the sign") for r in draft.remarks
    )
    inverter = sunspec_image(40000)
    inverter.pop(-1)
    draft = await discover_modbus.discover(Image({1: inverter}), target, origin="t")
    assert isinstance(draft, Draft) and not any("meter model" in r for r in draft.remarks)
