"""Round trip of IEC 104 discovery: the demo RTU served from mappings/demo/iec104.yaml
(mapping A) is interrogated into a draft (mapping B) with the commands given as options;
B passes `mgms check`, has every object of A at its address and reads A's raw values
(104 carries no scale or unit: B reads raw, A applies its scale)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.iec104.driver import Iec104Driver
from drivers.iec104.scan import scan
from gateway.cli import main
from gateway.discover import iec104
from gateway.discover.draft import render
from gateway.errors import DiscoveryError, LinkError
from gateway.loader import check_files, load_config
from gateway.mapping import Device
from gateway.model import Value
from tests.support.procs import DEMO_CONFIG, SimProcess, free_port, sim_process
from tests.support.roundtrip import config_with, single_device

pytestmark = pytest.mark.integration

COMMANDS = [
    "1/1004/M_ME_NC_1+2001/C_SE_NC_1",
    "1/1005/M_ME_NB_1+2002/C_SE_NB_1",
    "1/2003/C_DC_NA_1",
]


@pytest.fixture(scope="module")
def rtu_sim() -> Iterator[SimProcess]:
    with sim_process(["chp1-rtu"]) as sim:
        yield sim


async def read_good(driver: Iec104Driver) -> dict[str, Value]:
    readable = [p for p in driver.device.points if p.direction.readable]
    for _ in range(50):
        readings = await driver.read(readable)
        if all(r.quality.good for r in readings):
            return {r.point: r.value for r in readings}
        await asyncio.sleep(0.1)
    raise AssertionError(f"not all good: {[(r.point, r.detail) for r in readings]}")


async def test_round_trip_draft_reads_the_raw_values_of_the_mapping(
    rtu_sim: SimProcess, tmp_path: Path
) -> None:
    port = rtu_sim.ports["chp1-rtu"]
    seen, notes = await asyncio.to_thread(scan, "127.0.0.1", port, [1], 2.0, 0.5)
    assert notes == []
    draft = iec104.draft_outstation(
        seen,
        iec104.parse_commands(COMMANDS),
        connection={"host": "127.0.0.1", "port": port},
        origin="test",
        device_id="rtu",
    )
    path = tmp_path / "draft.yaml"
    path.write_text(render(draft))
    site = config_with(tmp_path, DEMO_CONFIG, path)
    assert check_files([path]) == [] and check_files([site]) == []
    config_a = load_config(DEMO_CONFIG, port_overrides={"chp1-rtu": port})
    device_a: Device = next(d for d in config_a.devices if d.id == "chp1-rtu")
    device_b = single_device(site)
    b_at = {str(device_b.address_of(p.id)): p for p in device_b.points}
    assert set(b_at) == {str(device_a.address_of(p.id)) for p in device_a.points}
    assert "counter interrogation (37)" in render(draft)  # the integrated total came by CI

    drivers = Iec104Driver(device_a), Iec104Driver(device_b)
    for driver in drivers:
        await driver.connect()
    try:
        for _ in range(20):
            first, through_b, second = (
                await read_good(drivers[0]),
                await read_good(drivers[1]),
                await read_good(drivers[0]),
            )
            raw = {}
            for a in device_a.points:
                if a.direction.readable:
                    value = through_b[b_at[str(device_a.address_of(a.id))].id]
                    raw[a.id] = value if isinstance(value, bool) else value * a.scale + a.offset
            if first == second and raw == pytest.approx(first):
                break
            await asyncio.sleep(0.2)
        assert first == second
        assert raw == pytest.approx(first)
    finally:
        for driver in drivers:
            await driver.close()


def test_a_bad_command_option_names_it() -> None:
    with pytest.raises(DiscoveryError, match="--command '1/2003/C_XX_NA_1'"):
        iec104.parse_commands(["1/2003/C_XX_NA_1"])


def test_nothing_listening_is_a_link_error() -> None:
    port = free_port()
    with pytest.raises(LinkError, match=f"cannot connect to 127.0.0.1:{port}: "):
        scan("127.0.0.1", port, [1], 1.0, 0.0)


def test_a_server_that_is_no_outstation_is_named_as_such() -> None:
    # the kernel completes the TCP handshake from the backlog; nothing ever answers STARTDT
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with pytest.raises(LinkError, match="connected, but no IEC 104 data transfer"):
            scan("127.0.0.1", port, [1], 1.0, 0.0)


def test_a_common_address_that_sends_nothing_is_an_error_not_a_draft(
    rtu_sim: SimProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the RTU rejects the interrogation of CA 7 but keeps sending CA 1's periodic data
    port = rtu_sim.ports["chp1-rtu"]
    out = tmp_path / "rtu.yaml"
    args = ["discover", "iec104", f"127.0.0.1:{port}", "--ca", "7", "--listen", "1.5"]
    assert main([*args, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no information object of common address 7" in err
    assert "rejected" in err and "common addresses the outstation sent: 1: check --ca" in err
    assert not out.exists()


def test_a_command_on_a_received_object_is_refused_naming_the_option(
    rtu_sim: SimProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # IOA 1001 is the RTU's P measurement (M_ME_TF_1): the draft used to hold it twice
    port = rtu_sim.ports["chp1-rtu"]
    out = tmp_path / "rtu.yaml"
    args = ["discover", "iec104", f"127.0.0.1:{port}", "--listen", "0.5"]
    assert main([*args, "--command", "1/1001/C_SC_NA_1", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--command '1/1001/C_SC_NA_1': IOA 1001 of CA 1 was received as M_ME_TF_1" in err
    assert not out.exists()
