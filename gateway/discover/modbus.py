"""Modbus discovery: a SunSpec device gets a draft mapping; any other device a short report
of which register ranges answer (no guessed mapping: without a model the registers say
nothing about what they mean)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.discover.draft import Draft, DraftDevice
from gateway.discover.sunspec import (
    BASES,
    CHUNK,
    METERS,
    DraftNames,
    SunSpecUnit,
    WordReader,
    discover_units,
    draft_unit,
)
from gateway.protocols.modbus import Table

#: where register maps usually start; probed one register each when there is no SunSpec
PROBE_STARTS = (0, 1, 100, 256, 1000, 3000, 4000, 5000, 10000, 30000, 32768, 40000, 50000)
#: registers between two probes after each start: finds every block of this length or more
PROBE_STEP = 8
_SLUG = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class ModbusTarget:
    host: str
    port: int = 502
    units: tuple[int, ...] = (1,)
    timeout: float = 1.0


@dataclass
class RangeReport:
    """Register ranges that answer, per unit and table: (first, end) half open."""

    target: ModbusTarget
    ranges: dict[tuple[int, Table], list[tuple[int, int]]] = field(default_factory=dict)
    silent: list[int] = field(default_factory=list)

    def render(self) -> str:
        t = self.target
        bases = ", ".join(map(str, BASES))
        units = ", ".join(map(str, t.units))
        lines = [f"no SunSpec marker ({bases}) on {t.host}:{t.port}, unit(s) {units}"]
        for unit in self.silent:
            lines.append(f"unit {unit}: no answer")
        for (unit, table), spans in sorted(self.ranges.items()):
            text = ", ".join(f"{a}..{b - 1}" for a, b in spans) or "none of the probed addresses"
            lines.append(f"unit {unit} {table.value}: {text}")
        lines.append("no mapping drafted: map these registers from the device's manual")
        return "\n".join(lines)


def slug(text: str, fallback: str) -> str:
    """A mapping id from free text: letters, digits, _ . -; starts with a letter."""
    out = _SLUG.sub("-", text.strip()).strip("-.").lower()
    return out if out[:1].isalpha() else fallback


def draft_sunspec(
    target: ModbusTarget,
    units: Sequence[SunSpecUnit],
    *,
    origin: str,
    device_id: str | None = None,
    der: str | None = None,
    der_of_unit: Mapping[int, str] | None = None,
) -> Draft:
    """One mapping device for the SunSpec units found behind one address."""
    common = units[0].common
    dev_id = device_id or slug(common.get("Md", ""), "sunspec-device")
    names = DraftNames(dev_id, der or dev_id, len(units) > 1, der_of_unit or {})
    draft = Draft(origin=origin)
    device = DraftDevice(
        id=dev_id,
        protocol="modbus",
        connection={"host": target.host, "port": target.port},
        description=" ".join(common.get(k, "") for k in ("Mn", "Md")).strip() or "SunSpec device",
        timeout=target.timeout,
        options={
            "sunspec": [
                {"unit": u.unit, "base": u.base, "models": [m.id for m in u.models]} for u in units
            ]
        },
    )
    found = {u.unit for u in units}
    draft.unmapped += [
        f"unit {unit}: no SunSpec marker ({', '.join(map(str, BASES))}): silent or not"
        " SunSpec; nothing drafted"
        for unit in target.units
        if unit not in found
    ]
    for unit in units:
        info = unit.common
        chain = ", ".join(
            f"{m.id} {m.definition.name if m.definition else '?'} @{m.address}" for m in unit.models
        )
        device.notes.append(
            f"unit {unit.unit}: SunSpec at {unit.base}: {info.get('Mn', '?')} {info.get('Md', '?')}"
            f" version {info.get('Vr', '?')} serial {info.get('SN', '?')}"
        )
        device.notes.append(f"  models: {chain}")
        points, unmapped = draft_unit(unit, names)
        device.points += points
        draft.unmapped += unmapped
    draft.devices.append(device)
    draft.remarks.append(
        "scale factors (*_SF) were read once and are fixed in each point's scale:"
        " if the device changes a factor at run time, re-run discovery"
    )
    meters = sorted({m.id for u in units for m in u.models if m.id in METERS})
    if meters:
        draft.remarks.append(
            f"meter model(s) {', '.join(map(str, meters))}: SunSpec does not fix the sign"
            " of W (import or export positive depends on the meter and where it sits);"
            " check it against the gateway's convention (a DER's P > 0 injects, at the"
            " coupling point P > 0 imports) and set scale -1 where it differs"
        )
    return draft


async def probe_ranges(reader: WordReader, target: ModbusTarget) -> RangeReport:
    """Which holding and input register ranges answer, from a few usual starting points."""
    report = RangeReport(target)
    for unit in target.units:
        for table in (Table.HOLDING, Table.INPUT):
            spans = await _probe_table(reader, unit, table)
            if spans is None:
                report.silent.append(unit)
                break
            report.ranges[(unit, table)] = spans
    return report


async def _probe_table(reader: WordReader, unit: int, table: Table) -> list[tuple[int, int]] | None:
    """The ranges that answer in the first CHUNK registers after each usual start, probed
    every PROBE_STEP registers (a map need not begin at the start: 40072 rather than
    40000); None when the unit does not answer at all."""
    spans: list[tuple[int, int]] = []
    for start in PROBE_STARTS:
        refused: int | None = None
        for probe in range(start, min(start + CHUNK, 65536), PROBE_STEP):
            if any(a <= probe < b for a, b in spans):
                continue
            answer = await reader.read_words(unit, table, probe, 1)
            if answer is None:
                return None
            if not isinstance(answer, list):
                refused = probe
                continue
            first = probe if refused is None else await _first(reader, unit, table, refused, probe)
            spans.append((first, await _extent(reader, unit, table, probe + 1)))
    return sorted(spans)


async def _first(reader: WordReader, unit: int, table: Table, refused: int, answers: int) -> int:
    """Where the range that answers at `answers` begins, after the refused `refused`."""
    good, bad = answers, refused
    while good - bad > 1:
        mid = (good + bad) // 2
        if isinstance(await reader.read_words(unit, table, mid, answers - mid + 1), list):
            good = mid
        else:
            bad = mid
    return good


async def _extent(reader: WordReader, unit: int, table: Table, end: int) -> int:
    """How far a range that answers at `end - 1` goes on: read on in full requests, then
    bisect the last one."""
    while end < 65536:
        n = min(CHUNK, 65536 - end)
        answer = await reader.read_words(unit, table, end, n)
        if isinstance(answer, list):
            end += n
            continue
        if answer is None:
            return end
        good, bad = 0, n
        while bad - good > 1:
            mid = (good + bad) // 2
            if isinstance(await reader.read_words(unit, table, end, mid), list):
                good = mid
            else:
                bad = mid
        return end + good
    return end


async def discover(
    reader: WordReader,
    target: ModbusTarget,
    *,
    origin: str,
    device_id: str | None = None,
    der: str | None = None,
    der_of_unit: Mapping[int, str] | None = None,
) -> Draft | RangeReport:
    units = await discover_units(reader, target.units)
    if not units:
        return await probe_ranges(reader, target)
    return draft_sunspec(
        target, units, origin=origin, device_id=device_id, der=der, der_of_unit=der_of_unit
    )
