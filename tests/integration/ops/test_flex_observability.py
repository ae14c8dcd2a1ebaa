"""What an operator sees of a reserve activation, end to end: the Modbus devices of the
demo microgrid in the simulator, the gateway with its market side built by the composition
root, an AMS simulator driving a CRP cycle over mutual TLS, and the ops listener. After
the cycle /api/status shows the notification and the activation with its chart series,
/metrics (read with the Prometheus reference parser) counts the activation, its latency
and the delivered percentage, and the page draws the chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.demo_market import ams_for, crp_cycle
from gateway.ops.server import OpsServer
from tests.support.demo_site import demo_site

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def test_activation_is_seen_in_status_metrics_and_chart(tmp_path: Path) -> None:
    with demo_site(tmp_path / "state", {"modbus"}) as config:
        async with (
            ams_for(config, config.gateway.state_dir) as ams,
            Gateway(config) as gw,
            OpsServer(gw, config.gateway.ops) as ops,
        ):
            assert gw.market is not None
            base = f"http://127.0.0.1:{ops.port}"
            _, before = await get(base + "/api/status")
            status, text = await get(base + "/metrics")
            assert status == 200
            first = samples(text)
            assert first[("mgms_activations_total", (("result", "applied"),))] == 0
            assert first[("mgms_activation_latency_seconds_count", ())] == 0
            assert await gw.wait_connected(30)
            cycle: dict[str, Any] = await crp_cycle(ams)
            assert cycle["activation"]["status"] == 200, cycle
            _, status_text = await get(base + "/api/status")
            _, text = await get(base + "/metrics")
            _, page = await get(base + "/")

    assert '"activation": null' in before or '"activation":null' in before
    flex = json.loads(status_text)["flex"]
    assert flex["notification"] is not None
    activation = flex["activation"]
    assert activation is not None
    assert activation["state"] in {"active", "ending", "finished"}, activation
    assert activation["p_kw"] == pytest.approx(cycle["activation"]["p_set_kw"], abs=0.5)
    series = activation["series"]
    assert len(series) >= 3  # one point per control cycle (1 s) of a 20 s activation
    assert all(p["setpoint_kw"] is not None for p in series)
    assert any(p["measured_kw"] is not None for p in series)
    assert any(p["baseline_kw"] is not None for p in series)

    after = samples(text)
    assert after[("mgms_activations_total", (("result", "applied"),))] == 1
    assert after[("mgms_activation_latency_seconds_count", ())] == 1
    assert 0 < after[("mgms_activation_latency_seconds_sum", ())] < 10
    delivered = after[("mgms_verification_delivered_percent", ())]
    assert delivered == pytest.approx(cycle["verification"]["intervals"][-1]["p_percent"], abs=1)
    assert after[("mgms_inbound_messages_total", (("reason", "accepted"),))] >= 2

    assert 'class="series-setpoint"' in page and 'class="series-measured"' in page
