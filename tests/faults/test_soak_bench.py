"""bench/soak.py runs end to end on the fault field: a short run whose figures must say
nothing was lost (the bench's own speed figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.faults.field import FIELD_CONFIG
from tests.support.procs import ROOT, child_env

pytestmark = pytest.mark.integration


def test_soak_bench_short_run() -> None:
    args = ["--config", str(FIELD_CONFIG), "--calm", "2", "--duration", "10"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), *args, "--restart-every", "4"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    field = result["field"]
    assert field["restarts"] == field["restarts_survived"] == 2, field
    assert field["samples_lost"] == 0 and field["samples_delivered"] > 0
    assert field["points_unrecovered"] == 0 and field["link_events_extra"] == 0
    assert result["protocols"] == ["dlms", "iec104", "iec61850", "modbus"]
    for phase in ("calm", "faults"):
        assert result["poll_ms"][phase]["n"] > 10
    assert result["rss_mb"]["start"] > 0 and result["rss_mb"]["end"] > 0
    hostile = result["hostile"]  # hostile inbound messages during the faults
    assert hostile["tried"] > 0 and hostile["applied"] == 0 and hostile["unexpected"] == 0, hostile
