"""Units end to end: the demo microgrid mapped in W, var, Wh and MW instead of kW, kvar and
kWh gives the same forecast, dispatch and verification as the shipped kW mapping, and
the status (`/api/status`) shows its DERs in kW.

Both variants run at once (each its own `mgms sim` process and gateway, the same
simulated start time), so their physics see the same simulated moments."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import Gateway
from gateway.flex.cycle import CycleReport
from gateway.loader import load_config
from gateway.ops.status import as_json, snapshot
from gateway.sqlite import read_only
from tests.integration.test_flex_gateway import check_delivered, run_cycle, sent_values
from tests.support.procs import DEMO_CONFIG

pytestmark = pytest.mark.integration

#: kW-family unit -> (unit of the variant, factor from the old unit to the new)
SMALL = {"KiloW": ("W", 1e3), "KiloVAR": ("VAR", 1e3), "KiloW-HR": ("W-HR", 1e3)}
#: the coupling point's power in MW
LARGE = {"KiloW": ("MegaW", 1e-3), "KiloVAR": ("KiloVAR", 1.0), "KiloW-HR": ("MegaW-HR", 1e-3)}
UP_KW = 25.0


def _rescaled(point: dict[str, Any], protocol: str) -> dict[str, Any]:
    """The point in another unit of its quantity; the device's raw values stay the same
    (scale and offset follow), except on DLMS, whose registers carry their own unit, and
    on a CEMS's Smart API points, whose value objects do."""
    if point.get("quantity", "other") == "other":
        return point  # a point without a canonical quantity keeps its unit
    table = LARGE if point["id"].startswith("pcc.") and protocol == "modbus" else SMALL
    if point["unit"] not in table:
        return point
    unit, factor = table[point["unit"]]
    out = {**point, "unit": unit}
    carries_unit = protocol == "dlms" or str(point["address"]).startswith("<")
    if not carries_unit:
        out["scale"] = point.get("scale", 1.0) * factor
        out["offset"] = point.get("offset", 0.0) * factor
    if "limits" in point:
        out["limits"] = {k: v * factor for k, v in point["limits"].items()}
    return out


def w_variant(folder: Path) -> Path:
    """The demo config with its mappings rewritten in W/var/Wh (MW at the Modbus coupling
    point meter), written under `folder`."""
    demo_dir = DEMO_CONFIG.parent.parent / "mappings" / "demo"
    shutil.copytree(demo_dir / "secrets", folder / "secrets")
    config = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    mappings = []
    for name in config["mappings"]:
        source = (DEMO_CONFIG.parent / name).resolve()
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
        for device in data["devices"]:
            device["points"] = [_rescaled(p, device["protocol"]) for p in device["points"]]
        (folder / source.name).write_text(yaml.safe_dump(data), encoding="utf-8")
        mappings.append(source.name)
    config["mappings"] = mappings
    config["state_dir"] = "state"
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class Outcome:
    report: CycleReport
    #: the /api/status payload and the unit of every point's value in the point table
    status: dict[str, Any]
    units: dict[str, str]


async def cycle(config_path: Path, state: Path) -> Outcome:
    seen: dict[str, Any] = {}

    def look(gw: Gateway) -> None:
        seen["status"] = as_json(snapshot(gw))
        seen["units"] = {m.point.id: r.unit for m in gw.table if (r := gw.table.latest(m.point.id))}

    report = await run_cycle(state, None, UP_KW, config_path, look)
    return Outcome(report, seen["status"], seen["units"])


def sent_with_meaning(state: Path) -> list[tuple[str, float, float]]:
    """(point, value sent, its meaning in the DER's kW) of the confirmed set points."""
    with read_only(state / "flex.sqlite", "flex records") as db:
        return [
            (str(p), float(v), float(m))
            for p, v, m in db.execute(
                "SELECT point, value, meaning FROM flex_setpoint WHERE status = 'confirmed'"
            )
        ]


def ders_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in status["ders"]}


async def test_demo_mapped_in_w_gives_the_kw_results(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "kw").mkdir()
    w_config = w_variant(tmp_path / "w")
    kw, w = await asyncio.gather(
        cycle(DEMO_CONFIG, tmp_path / "kw"), cycle(w_config, tmp_path / "w")
    )
    variant = load_config(w_config)
    units = {p.id: p.unit for d in variant.devices for p in d.points}
    assert units["bess1.p"] == "W" and units["pcc.p"] == "MegaW"
    assert units["pcc.meter.e_import"] == "W-HR"

    # the point table holds every value in its quantity's canonical unit
    assert w.units == kw.units
    assert w.units["bess1.p"] == "KiloW" and w.units["pcc.e_import"] == "KiloW-HR"
    rows = {r["id"]: r for r in w.status["points"]}
    assert rows["bess1.p"]["unit"] == "KiloW" and rows["pcc.p"]["unit"] == "KiloW"

    # the status page's DER table (the /api/status payload) is in kW either way
    w_ders, kw_ders = ders_of(w.status), ders_of(kw.status)
    ratings = {d.id: d.ratings for d in variant.gateway.ders}
    for der, row in w_ders.items():
        if row["p_kw"] is None:
            continue
        if der in ratings:
            assert ratings[der].p_min_kw - 1 <= row["p_kw"] <= ratings[der].p_max_kw + 1, row
        assert row["p_kw"] == pytest.approx(kw_ders[der]["p_kw"], abs=3.0), (row, kw_ders[der])
    for der in ("bess1", "bess2"):
        assert w_ders[der]["soc_pct"] == pytest.approx(kw_ders[der]["soc_pct"], abs=1.0)

    # forecast: the same baseline and band per interval (the two physics run seconds apart)
    kw_iv, w_iv = kw.report.forecast.intervals, w.report.forecast.intervals
    assert len(kw_iv) == len(w_iv)
    for a, b in zip(kw_iv, w_iv, strict=True):
        assert b.baseline_p_kw == pytest.approx(a.baseline_p_kw, abs=3.0)
        assert b.p_min_kw == pytest.approx(a.p_min_kw, abs=3.0)
        assert b.p_max_kw == pytest.approx(a.p_max_kw, abs=3.0)

    # dispatch: both deliver the reserve; set points went out in each point's own unit
    check_delivered(kw.report, UP_KW)
    check_delivered(w.report, UP_KW)
    kw_sent, w_sent = sent_values(tmp_path / "kw"), sent_values(tmp_path / "w")
    assert set(w_sent) == set(kw_sent)
    # the battery takes a share of the reserve (the building loads behind the CEMS the rest:
    # how much each takes depends on the moment's readings, which differ between the runs)
    assert max(kw_sent["bess1.p_set"]) > 1.0 and max(w_sent["bess1.p_set"]) > 1000.0
    # each set point went out in its point's unit: the value sent is the dispatch's kW
    # in W (and in kW for the demo's mapping)
    for state, factor in ((tmp_path / "kw", 1.0), (tmp_path / "w", 1000.0)):
        for point, value, meaning in sent_with_meaning(state):
            if point in ("bess1.p_set", "bess2.p_set"):
                assert value == pytest.approx(factor * meaning, abs=factor * 1e-3), point

    # verification: the same request and delivery per interval
    assert kw.report.verification is not None and w.report.verification is not None
    for a, b in zip(kw.report.verification.intervals, w.report.verification.intervals, strict=True):
        assert b.requested_kw == pytest.approx(a.requested_kw, abs=3.0)
        assert b.delivered_pct is not None and a.delivered_pct is not None
        assert b.delivered_pct == pytest.approx(a.delivered_pct, abs=10.0)
