"""Round trip of SunSpec discovery: the hybrid inverter served from mappings/demo/sunspec.yaml
(mapping A) is discovered into a draft (mapping B); B passes `mgms check`, gives every point
of A at the same address with the same role, and reads the same values as A."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.modbus.scan import RegisterScanner
from gateway.discover import modbus as discover_modbus
from gateway.discover.draft import render
from gateway.loader import check_files
from tests.support.procs import DEMO_CONFIG, ROOT, SimProcess, child_env, free_port, sim_process
from tests.support.roundtrip import config_with, pair_points, same_readings, single_device

pytestmark = pytest.mark.integration

SUNSPEC_CONFIG = ROOT / "config" / "sunspec.yaml"


@pytest.fixture(scope="module")
def sunspec_sim() -> Iterator[SimProcess]:
    with sim_process(["hybrid1"], config=SUNSPEC_CONFIG) as sim:
        yield sim


async def test_round_trip_draft_reads_what_the_mapping_reads(
    sunspec_sim: SimProcess, tmp_path: Path
) -> None:
    port = sunspec_sim.ports["hybrid1"]
    target = discover_modbus.ModbusTarget("127.0.0.1", port, units=(1, 2, 3))
    scanner = RegisterScanner("127.0.0.1", port, 1.0)
    await scanner.connect()
    try:
        draft = await discover_modbus.discover(
            scanner, target, origin="test", der_of_unit={1: "bess3", 2: "pv2"}
        )
    finally:
        await scanner.close()
    assert not isinstance(draft, discover_modbus.RangeReport)
    path = tmp_path / "draft.yaml"
    path.write_text(render(draft))
    site = config_with(tmp_path, SUNSPEC_CONFIG, path)
    assert check_files([path]) == []
    assert check_files([site]) == []  # its DER references resolve against the site

    device_a = single_device(SUNSPEC_CONFIG, {"hybrid1": port})
    device_b = single_device(site)
    for a, b in pair_points(device_a, device_b).items():
        point_a = next(p for p in device_a.points if p.id == a)
        assert (b.type, b.scale, b.direction) == (point_a.type, point_a.scale, point_a.direction)
    assert len(device_b.points) == len(device_a.points)  # the rest reads "not implemented"
    first = await same_readings(device_a, device_b)
    assert first["pv2.limit"] == 100.0 and 0 < float(first["bess3.soc"]) < 100


def mgms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )


def discover_hybrid(sim: SimProcess, units: str, out: Path) -> str:
    """`mgms discover modbus` of the hybrid inverter: the summary printed (exit 0)."""
    port = sim.ports["hybrid1"]
    done = mgms("discover", "modbus", f"127.0.0.1:{port}", "--units", units, "-o", str(out))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_writes_a_checked_draft(sunspec_sim: SimProcess, tmp_path: Path) -> None:
    out = tmp_path / "b.yaml"
    assert "drafted 7 point(s), 7 with a role" in discover_hybrid(sunspec_sim, "1,2", out)
    text = out.read_text()
    assert "# unit 2: SunSpec at 40000: MGMS fwsim hybrid1" in text
    assert "der: hybrid1" in text  # no --der: the device id


def test_device_without_sunspec_is_reported_not_drafted(tmp_path: Path) -> None:
    with sim_process(["pcc-meter", "bess1-inverter"], config=DEMO_CONFIG) as sim:
        out = tmp_path / "meter.yaml"
        port = sim.ports["pcc-meter"]
        done = mgms("discover", "modbus", f"127.0.0.1:{port}", "-o", str(out))
        inverter = sim.ports["bess1-inverter"]
        other = mgms("discover", "modbus", f"127.0.0.1:{inverter}", "-o", str(out))
    # the inverter's map begins 72 registers after the usual start 40000
    assert other.returncode == 3 and "unit 1 holding: 40072..40112" in other.stdout
    assert done.returncode == 3, done.stderr
    assert "no SunSpec marker" in done.stdout
    assert "unit 1 input: 0..18" in done.stdout  # the meter's 7 points, floats and doubles
    assert "unit 1 holding: none of the probed addresses" in done.stdout
    assert not out.exists()


def test_nothing_listening_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    done = mgms("discover", "modbus", f"127.0.0.1:{port}", "-o", str(tmp_path / "x.yaml"))
    assert done.returncode == 1
    # the target as typed, then the reason: no placeholder device name in between
    assert f"discover modbus 127.0.0.1:{port}: cannot connect to 127.0.0.1:{port}" in done.stderr
    assert "cannot connect" in done.stderr


def test_a_probed_unit_without_sunspec_is_listed_in_the_draft(
    sunspec_sim: SimProcess, tmp_path: Path
) -> None:
    out = tmp_path / "b.yaml"
    assert "4 finding(s) not mapped" in discover_hybrid(sunspec_sim, "1,3", out)
    text = out.read_text()
    assert "#   unit 3: no SunSpec marker (40000, 50000, 0): silent or not SunSpec" in text


def test_a_device_that_never_answers_is_an_error_not_a_report(tmp_path: Path) -> None:
    # the kernel accepts the connection from the backlog; no Modbus answer ever comes
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        out = str(tmp_path / "x.yaml")
        done = mgms("discover", "modbus", f"127.0.0.1:{port}", "--units", "1,2", "-o", out)
    assert done.returncode == 1, done.stdout
    assert f"discover modbus 127.0.0.1:{port}: no answer from unit(s) 1, 2 within 1 s" in (
        done.stderr
    )
    assert "pymodbus" not in done.stderr  # one message, not a hex dump per probe
    assert "no mapping drafted" not in done.stdout
