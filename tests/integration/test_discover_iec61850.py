"""Round trip of IEC 61850 discovery: the demo IED served from mappings/demo/iec61850.yaml
(mapping A) is browsed in a worker process into a draft (mapping B) that passes `mgms check`
and reads what A reads, controls with the IED's ctlModel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.iec61850.browsing import browse_ied
from gateway.discover import iec61850, scl
from gateway.discover.draft import render
from gateway.errors import LinkError
from gateway.loader import check_files, load_config
from tests.support.procs import DEMO_CONFIG, ROOT, SimProcess, free_port, sim_process
from tests.support.roundtrip import config_with, pair_points, same_readings, single_device

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ied_sim() -> Iterator[SimProcess]:
    with sim_process(["bess2-ied"]) as sim:
        yield sim


async def test_round_trip_draft_reads_what_the_mapping_reads(
    ied_sim: SimProcess, tmp_path: Path
) -> None:
    port = ied_sim.ports["bess2-ied"]
    browsed = await browse_ied("127.0.0.1", port, 2.0, within=30.0)
    model = iec61850.from_browse("BESS2LD0", browsed)
    draft = iec61850.draft_ied(
        model,
        connection={"host": "127.0.0.1", "port": port},
        origin="test",
        device_id="ied",
        der="bess2",
    )
    path = tmp_path / "draft.yaml"
    path.write_text(render(draft))
    site = config_with(tmp_path, DEMO_CONFIG, path)
    assert check_files([path]) == [] and check_files([site]) == []

    config_a = load_config(DEMO_CONFIG, port_overrides={"bess2-ied": port})
    device_a = next(d for d in config_a.devices if d.id == "bess2-ied")
    device_b = single_device(site)
    pairs = pair_points(device_a, device_b)
    assert len(device_b.points) == len(device_a.points)
    # controls carry the IED's control model: WSpt is SBO, DERStr direct
    assert pairs["bess2.p_set"].sbo and not pairs["bess2.enable"].sbo
    assert pairs["bess2.p_set"].type == "float32" and pairs["bess2.enable"].type == "bool"
    assert device_b.options == {
        "enhanced_security": True,
        "originator": "mgms",
        "data_sets": device_a.options["data_sets"],  # with its report control block
    }
    readings = await same_readings(device_a, device_b)
    assert readings["bess2.capacity"] == 60.0


async def test_nothing_listening_is_a_link_error() -> None:
    port = free_port()
    with pytest.raises(LinkError, match=f"127.0.0.1:{port}"):
        await browse_ied("127.0.0.1", port, 1.0, within=30.0)


async def test_scl_import_round_trip(ied_sim: SimProcess, tmp_path: Path) -> None:
    """The demo IED's ICD, imported offline, reads the served IED as its mapping does."""
    port = ied_sim.ports["bess2-ied"]
    ied = scl.load_ied(ROOT / "mappings" / "demo" / "bess2-ied.icd", None)
    draft = iec61850.draft_ied(
        ied.model,
        connection={"host": ied.host, "port": port},
        origin="test",
        device_id="from-scl",
        der="bess2",
    )
    path = tmp_path / "scl.yaml"
    path.write_text(render(draft))
    site = config_with(tmp_path, DEMO_CONFIG, path)
    assert check_files([site]) == []
    config_a = load_config(DEMO_CONFIG, port_overrides={"bess2-ied": port})
    device_a = next(d for d in config_a.devices if d.id == "bess2-ied")
    await same_readings(device_a, single_device(site))


async def test_browsing_and_the_icd_give_the_same_points_with_the_ieds_units(
    ied_sim: SimProcess,
) -> None:
    """The IED serves `units` of its measurements and settings, as its ICD declares them:
    online and offline drafts agree point for point, units read rather than assumed."""
    port = ied_sim.ports["bess2-ied"]
    browsed = await browse_ied("127.0.0.1", port, 2.0, within=30.0)
    online = iec61850.from_browse("BESS2LD0", browsed)
    offline = scl.load_ied(ROOT / "mappings" / "demo" / "bess2-ied.icd", None).model
    drafts = [
        iec61850.draft_ied(
            model,
            connection={"host": "127.0.0.1", "port": port},
            origin="t",
            device_id="ied",
            der="bess2",
        )
        for model in (online, offline)
    ]
    # the points and the comments above them (the device's own lines name the IED: the
    # ICD's IED name offline, the first logical device online)
    points = [
        sorted(line for line in render(d).splitlines() if line[:6] == " " * 6) for d in drafts
    ]
    assert points[0] == points[1]
    text = render(drafts[0])
    for units in ("SIUnit 38 x10^3", "SIUnit 63 x10^3", "SIUnit 72 x10^3"):
        assert f"units {units}" in text
    assert "unit assumed from the role" in text  # SoC: percent has no SIUnit
