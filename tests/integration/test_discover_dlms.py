"""Round trip of DLMS/COSEM discovery: the demo meters served from mappings/demo/dlms.yaml
(mapping A: HLS-GMAC and LLS) are read through their association's object list into
drafts (mapping B) that pass `mgms check` and read what A reads: registers with their
scaler and unit, the clock, demand, the disconnector and the limiter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.dlms.scan import describe_meter
from gateway.discover import dlms
from gateway.discover.draft import render
from gateway.loader import check_files, load_config
from gateway.protocols.dlms import DlmsOptions
from tests.support.procs import DEMO_CONFIG, ROOT, SimProcess, sim_process
from tests.support.roundtrip import config_with, same_readings, single_device

pytestmark = pytest.mark.integration

SECRETS = ROOT / "mappings" / "demo" / "secrets"
METERS = {
    "pcc-billing-meter": (
        "pcc",
        {"client_address": 1, "authentication": "high", "keys_file": "pcc-meter.keys"},
    ),
    "load1-customer-meter": (
        "load1",
        {"client_address": 17, "authentication": "low", "password_file": "load1-meter.password"},
    ),
}


@pytest.fixture(scope="module")
def meter_sim() -> Iterator[SimProcess]:
    with sim_process(list(METERS)) as sim:
        yield sim


@pytest.mark.parametrize("meter", list(METERS))
async def test_round_trip_draft_reads_what_the_mapping_reads(
    meter_sim: SimProcess, tmp_path: Path, meter: str
) -> None:
    port = meter_sim.ports[meter]
    der, raw = METERS[meter]
    options = DlmsOptions.model_validate(raw, context={"base_dir": str(SECRETS)})

    objects = await asyncio.to_thread(describe_meter, "127.0.0.1", port, options, 2.0)
    secret = {k: str(SECRETS / v) if k.endswith("_file") else v for k, v in raw.items()}
    draft = dlms.draft_meter(
        objects,
        connection={"host": "127.0.0.1", "port": port},
        options=secret,
        origin="test",
        device_id="meter",
        der=der,
        coupling_point="pcc",
    )
    assert draft.unmapped == []
    path = tmp_path / "draft.yaml"
    path.write_text(render(draft))
    site = config_with(tmp_path, DEMO_CONFIG, path)
    assert check_files([path]) == [] and check_files([site]) == []
    config_a = load_config(DEMO_CONFIG, port_overrides={meter: port})
    device_a = next(d for d in config_a.devices if d.id == meter)
    device_b = single_device(site)
    # the load meter's import power is drafted with scale -1 (load1 is a DER, not the
    # coupling point), as mapping A has it: the same readings, sign included
    await same_readings(device_a, device_b)
    if meter == "pcc-billing-meter":
        assert device_b.options["profile_obis"] == "1.0.99.1.0.255"
        register = next(o for o in objects if o.obis == "1.0.32.7.0.255")
        assert (register.class_id, register.scaler, register.unit) == (4, -1, 35)  # 0.1 V
