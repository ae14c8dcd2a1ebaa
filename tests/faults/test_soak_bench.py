"""bench/soak.py runs end to end on the fault field with the full product: field faults,
activations and Smart API reads at a sustained rate over mutual TLS, forecasts and
verifications to the AMS. Its figures must say nothing was lost; rates must come within a
sane fraction of the (modest) targets; latencies are reported, never judged here.

A short run in `make test`; MGMS_LONG_FAULTS=1 runs five minutes at the bench's default
rates (100 activations and 100 reads a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bench.soaklib.market import EXPLAINED_REFUSALS
from tests.faults.field import FIELD_CONFIG, LONG
from tests.support.procs import ROOT, child_env

pytestmark = pytest.mark.integration


if LONG:
    RUN = ["--calm", "10", "--duration", "300", "--restart-every", "8"]
    RATES: list[str] = []
    TIMEOUT = 900
else:
    RUN = ["--calm", "2", "--duration", "15", "--restart-every", "5"]
    RATES = ["--activation-rate", "5", "--read-rate", "20", "--clients", "2"]
    TIMEOUT = 150


def soak(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--config", str(FIELD_CONFIG), *args],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result: dict[str, Any] = json.loads(lines[0])
    return result


@pytest.mark.timeout(TIMEOUT + 30)
def test_soak_bench_run() -> None:
    result = soak(*RUN, *RATES)
    field = result["field"]
    restarts = field["restarts"]
    assert restarts >= (30 if LONG else 2) and field["restarts_survived"] == restarts, field
    assert field["samples_lost"] == 0 and field["samples_delivered"] > 0
    assert field["points_unrecovered"] == 0 and field["link_events_extra"] == 0
    assert result["protocols"] == ["dlms", "iec104", "iec61850", "modbus"]
    for phase in ("calm", "faults"):
        assert result["poll_ms"][phase]["n"] > 10

    activation = result["activation"]
    assert activation["accepted"] > 0 and activation["latency_ms_calm"]["n"] > 0
    assert activation["lost"] == 0 and activation["applied"] > 0, activation
    assert activation["applied_with_device_writes"] > 0
    assert activation["records_vs_controller"] == 0, activation
    assert activation["writes_confirmed"] > 0
    assert set(activation["refusal_reasons"]) <= EXPLAINED_REFUSALS, activation["examples"]
    assert not activation["client_failures"], activation["examples"]
    read = result["read"]
    assert read["errors"] == 0 and read["answered_ok"] > 0, read["examples"]
    if not LONG:  # modest targets the shared 2-core machine keeps up with
        assert activation["achieved_rate"] >= 0.2 * activation["target_rate"], activation
        assert read["achieved_rate"] >= 0.2 * read["target_rate"], read
    north = result["north"]
    assert north["lost"] == 0 and north["duplicated"] == 0, north
    assert north["verification"]["queued"] > 0 and north["forecast"]["queued"] > 0

    summary = result["summary"]
    assert summary["messages_lost"] == 0
    assert summary["restarts_survived"] == restarts
    assert summary["activation_p50_ms"] is not None and summary["activation_p99_ms"] is not None
    assert summary["rss_mb_start"] > 0 and summary["rss_mb_end"] > 0
    # resident memory by kind adds up to the RSS taken at the same moment
    rss = result["rss_mb"]
    for when in ("start", "end"):
        kinds = rss[f"by_kind_{when}"]
        assert kinds["libraries"] > 0 and kinds["allocated"] > 0, kinds
        assert abs(kinds["libraries"] + kinds["allocated"] - rss[when]) < 2, (kinds, rss)
    # a 15 s run ends inside the warm-up: its memory is reported, never judged steady
    if not LONG:
        assert rss["steady"] is not None and rss["steady_ok"] is None, rss
    hostile = result["hostile"]  # hostile inbound messages during the faults
    assert hostile["tried"] > 0 and hostile["applied"] == 0 and hostile["unexpected"] == 0, hostile
    assert summary["hostile_tried"] == hostile["tried"] and summary["hostile_applied"] == 0
