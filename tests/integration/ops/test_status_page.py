"""The status page in headless Chromium, served by a gateway running against the Modbus
simulators, with an activation carried out through the write path: load it, check what
an operator sees, keep a screenshot as a test artifact."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.loader import load_config
from gateway.mapping import Quantity
from gateway.model import Command, CommandStatus
from gateway.ops.server import OpsServer
from gateway.ops.status import ActivationView, FlexStatus, NotificationView, SeriesPoint
from tests.support.memory_driver import MemoryDevice
from tests.support.procs import DEMO_CONFIG, ROOT, sim_process
from tests.support.waiting import until
from tests.unit.gateway.ops.conftest import field_factory

pytestmark = pytest.mark.integration

ARTIFACTS = Path(os.environ.get("MGMS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).isoformat()
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is needed: apt-get install chromium (scripts/system-deps)")


async def run_chromium(profile: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out.decode()


def png_facts(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values of the image data."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'<(\w+)[^>]*id="{element_id}".*?</\1>', dom, re.S)
    assert match, f"no element #{element_id} in the page"
    return re.sub(r"<[^>]+>", " ", match.group(0))


async def test_status_page_in_chromium(tmp_path: Path) -> None:
    protocols = {"modbus", "iec104"}
    devices = [d.id for d in load_config(DEMO_CONFIG).devices if d.protocol in protocols]
    with sim_process(devices, extra=["--start", NOON]) as sim:
        config = load_config(DEMO_CONFIG, port_overrides=sim.ports)
        config.mappings = {
            p: m for p, m in config.mappings.items() if p.stem in {"modbus", "iec104"}
        }
        config.gateway.state_dir = tmp_path / "state"
        config.gateway.ops.port = 0
        async with Gateway(config) as gw, OpsServer(gw, config.gateway.ops) as ops:
            assert gw.controller is not None
            assert await gw.wait_connected(15)
            await until(lambda: gw.table.value("pcc", Quantity.ACTIVE_POWER) is not None, 15)
            baseline = gw.table.value("pcc", Quantity.ACTIVE_POWER)
            assert baseline is not None
            # a reserve activation: 15 kW less import at the coupling point, from the battery
            target = baseline - 15.0
            start = datetime.now(UTC)
            series: list[SeriesPoint] = []

            def view(state: str) -> FlexStatus:
                return FlexStatus(
                    NotificationView("rn-2025-001", start, start + timedelta(hours=1), 4),
                    ActivationView("ra-42", state, start, p_kw=target, series=tuple(series)),
                )

            gw.status.set_flex_source(lambda: view("active"))
            result = await gw.controller.write(Command("bess1.p_set", 15.0, origin="test"))
            assert result.status is CommandStatus.CONFIRMED
            # a write-only start/stop command (IEC 104 double command, select-before-operate)
            started = await gw.controller.write(Command("chp1.run", True, origin="test"))
            assert started.status is CommandStatus.CONFIRMED, started
            for _ in range(15):
                measured = gw.table.value("pcc", Quantity.ACTIVE_POWER)
                series.append(SeriesPoint(datetime.now(UTC), target, baseline, measured))
                await asyncio.sleep(0.2)
            assert series[-1].measured_kw == pytest.approx(target, abs=1.0)

            url = f"http://127.0.0.1:{ops.port}/"
            dom = await run_chromium(tmp_path / "profile", "--dump-dom", url)
            shot = ARTIFACTS / "status-page.png"
            await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(shot.unlink, missing_ok=True)
            await run_chromium(
                tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,1800", url
            )

    assert "<title>MGMS gateway — demo-microgrid</title>" in dom
    device_rows = text_of(dom, "devices")
    for device in devices:
        assert re.search(rf"{device}\s+(modbus|iec104)\s+up\b", device_rows), device
    ders = text_of(dom, "ders")
    assert re.search(r"bess1\s+battery\s+centralized\s+15\b", ders), ders  # P follows the set point
    points = text_of(dom, "points")
    assert re.search(r"pcc\.p\s+pcc\s+active_power\s+-?[\d.]+\s+KiloW\s+good", points)
    assert "no data" not in points and "invalid" not in points
    # the write-only command: no reading, the last command with its time and confirmation
    run = re.search(
        r"chp1\.run\s+chp1\s+switch\s+\S+\s+UNITLESS\s+write-only, confirmed\s+"
        r"\S+\s+true confirmed at \d\d:\d\d:\d\d by test",
        points,
    )
    assert run, points
    assert re.search(r"bess1\.p_set\s.*15 confirmed at \d\d:\d\d:\d\d by test", points)
    flex = text_of(dom, "flex")
    assert "rn-2025-001" in flex and "ra-42" in flex and "active" in flex
    chart = re.search(r'<svg id="chart".*?</svg>', dom, re.S)
    assert chart, "no chart"
    for name in ("setpoint", "baseline", "measured"):
        lines = re.findall(rf'class="series-{name}"[^>]*points="([^"]+)"', chart.group(0))
        assert len(lines) == 1 and len(lines[0].split()) == 15, name
    assert 'id="readiness">ready<' in dom

    width, height, distinct = png_facts(shot)
    assert (width, height) == (1280, 1800)
    assert distinct > 20  # text, tables and the chart, not a blank page


SITE_DEVICES, SITE_POINTS = 20, 500


def site_files(directory: Path) -> Path:
    """A site of 20 devices with 500 points each (no DER roles), and its gateway config."""
    lines = ["devices:"]
    for d in range(SITE_DEVICES):
        lines += [
            f"  - id: site-{d:02}",
            "    protocol: modbus",
            f"    connection: {{host: 127.0.0.1, port: {20000 + d}}}",
            "    poll_interval: 0.5",
            "    points:",
        ]
        lines += [
            f"      - {{id: site-{d:02}.p{i:03}, address: 1/holding/{i}, type: int16, unit: KiloW}}"
            for i in range(SITE_POINTS)
        ]
    (directory / "site.yaml").write_text("\n".join(lines) + "\n")
    config = directory / "gw.yaml"
    config.write_text(
        "microgrid: {id: big-site}\nstate_dir: state\nmappings: [site.yaml]\n"
        "coupling_point: {import_limit_kw: 100, export_limit_kw: 100}\n"
        "ops: {port: 0}\n"
    )
    return config


async def test_status_page_stays_usable_with_10000_points(tmp_path: Path) -> None:
    """10,000 points on 20 devices: the page opens on a summary per device, the points that
    are not good and a filter; a device's points and a filter's matches come by link, and
    no list is longer than the page's cap."""
    config = load_config(site_files(tmp_path))
    fields: dict[str, MemoryDevice] = {}
    for d in range(SITE_DEVICES):
        field = fields[f"site-{d:02}"] = MemoryDevice()
        field.values.update({f"site-{d:02}.p{i:03}": float(i) for i in range(SITE_POINTS)})
    fields["site-07"].refuse.update(f"site-07.p{i:03}" for i in range(10))
    async with (
        Gateway(config, driver_factory=field_factory(fields)) as gw,
        OpsServer(gw, config.gateway.ops) as ops,
    ):
        await until(lambda: all(gw.table.latest(m.point.id) for m in gw.table), 30)
        base = f"http://127.0.0.1:{ops.port}/"
        front = await run_chromium(tmp_path / "p1", "--dump-dom", base)
        device = await run_chromium(tmp_path / "p2", "--dump-dom", base + "?device=site-03")
        one = await run_chromium(tmp_path / "p3", "--dump-dom", base + "?q=site-12.p042")
        many = await run_chromium(tmp_path / "p4", "--dump-dom", base + "?q=site")
        bad = await run_chromium(tmp_path / "p5", "--dump-dom", base + "?problems=1")
        shot = ARTIFACTS / "status-page-10000-points.png"
        await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
        await run_chromium(tmp_path / "p6", f"--screenshot={shot}", "--window-size=1280,1800", base)

    def point_ids(dom: str) -> list[str]:
        return re.findall(r"<tr><td>(site-\d\d\.p\d{3})</td>", dom)

    assert len(front) < 100_000, len(front)  # not 10,000 rows
    assert "10000 points on 20 devices" in front
    assert len(re.findall(r'<div class="device" id="device-site-\d\d">', front)) == SITE_DEVICES
    assert "site-07: 500 points, 490/500 good" in front
    assert 'id="point-filter"' in front
    assert point_ids(front) == [f"site-07.p{i:03}" for i in range(10)]  # only the bad ones

    assert point_ids(device) == [f"site-03.p{i:03}" for i in range(SITE_POINTS)]
    assert point_ids(one) == ["site-12.p042"]
    assert len(point_ids(many)) == 500
    assert "Showing the first 500 of 10000 matching points" in many
    assert point_ids(bad) == [f"site-07.p{i:03}" for i in range(10)]
    width, height, distinct = png_facts(shot)
    assert (width, height) == (1280, 1800) and distinct > 20
