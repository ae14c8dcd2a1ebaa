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
from tests.support.procs import DEMO_CONFIG, ROOT, sim_process
from tests.support.waiting import until

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
    devices = [d.id for d in load_config(DEMO_CONFIG).devices if d.protocol == "modbus"]
    with sim_process(devices, extra=["--start", NOON]) as sim:
        config = load_config(DEMO_CONFIG, port_overrides=sim.ports)
        config.mappings = {p: m for p, m in config.mappings.items() if p.name == "modbus.yaml"}
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
        assert re.search(rf"{device}\s+modbus\s+up\b", device_rows), device
    ders = text_of(dom, "ders")
    assert re.search(r"bess1\s+battery\s+centralized\s+15\b", ders), ders  # P follows the set point
    points = text_of(dom, "points")
    assert re.search(r"pcc\.p\s+pcc-meter\s+pcc\s+active_power\s+-?[\d.]+\s+KiloW\s+good", points)
    assert "no data" not in points and "invalid" not in points
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
