"""`mgms ams-sim --cycle` in its own process against the gateway's North over mutual TLS."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import ROOT, child_env, free_port
from tests.support.waiting import until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


async def test_ams_sim_command_runs_a_crp_cycle(pki: PkiFiles, tmp_path: Path) -> None:
    gw_port, ams_port = free_port(), free_port()
    config = support.gateway_config(pki, ams_port=ams_port, port=gw_port)
    # the simulator reserves half of every interval offered: offer the next half hour
    async with (
        support.flexibility(tmp_path / "gw", horizon_h=0.5) as flex,
        support.running_gateway(config, tmp_path / "gw", flex) as north,
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "ams-sim",
            "--certs",
            str(pki.dev.directory),
            "--microgrid",
            support.MICROGRID,
            "--gateway",
            f"https://127.0.0.1:{gw_port}",
            "--port",
            str(ams_port),
            "--state",
            str(tmp_path / "ams"),
            "--cycle",
            stdout=asyncio.subprocess.PIPE,
            env=child_env(),
            cwd=ROOT,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                ready = json.loads(await proc.stdout.readline())
                assert ready == {"ready": True, "port": ams_port}
                await flex.publish_forecast()

                async def activated() -> bool:
                    return bool(flex.accepted_activations())

                await until(activated, within=20)
                (activation,) = flex.accepted_activations()
                verification = support.verification(activation)
                await north.send(verification)
                result = json.loads(await proc.stdout.readline())
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert result["notification"]["id"] in {r.id for r in flex.service.reservations}
    assert result["notification"]["status"] == 200
    assert result["activation"]["status"] == 200
    assert result["activation"]["id"] == activation
    assert result["activation"]["latency_ms"] > 0
    assert result["verification"] == verification.id
