"""Every simulator killed (SIGKILL) and restarted while the gateway runs, one device at a
time: the gateway marks that device's points invalid, keeps polling the others, reconnects
each time and logs every transition exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.app import Gateway
from tests.faults.field import (
    DEVICES,
    RESTARTS,
    Field,
    errors_logged,
    field,
    gateway_for,
    is_comm_failure,
    is_good,
    link_events,
    readable,
)
from tests.support.waiting import until

pytestmark = pytest.mark.integration

#: polls every other device must complete while one is down
POLLS_DURING_OUTAGE = 3


async def outage(gw: Gateway, f: Field, device: str) -> None:
    """Kill `device`'s simulator, check what the gateway makes of it, restart it."""
    others = [d for d in gw.sessions if d != device]
    await asyncio.to_thread(f.kill, device)
    await until(lambda: not gw.sessions[device].up)
    for point in readable(gw, device):
        assert is_comm_failure(gw, point), (device, gw.table.latest(point))
    # the others keep polling while this one is down
    polls = {d: gw.sessions[d].polls for d in others}
    await until(lambda: all(gw.sessions[d].polls >= polls[d] + POLLS_DURING_OUTAGE for d in others))
    assert not gw.sessions[device].up
    for d in others:
        assert gw.sessions[d].up, d
        assert all(is_good(gw, p) for p in readable(gw, d)), d
    await asyncio.to_thread(f.start, device)
    await until(lambda: gw.sessions[device].up)
    await until(lambda: all(is_good(gw, p) for p in readable(gw, device)))


@pytest.mark.timeout(60 + 40 * RESTARTS)
async def test_simulators_killed_and_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    devices = list(DEVICES.values())
    with field(devices) as f:
        async with gateway_for(tmp_path, f.ports) as gw:
            assert gw.store is not None
            assert await gw.wait_connected(20)
            await until(lambda: all(is_good(gw, p) for d in devices for p in readable(gw, d)))
            for _ in range(RESTARTS):
                for device in devices:
                    await outage(gw, f, device)
            tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("device:")]
            assert len(tasks) == len(devices) and not any(t.done() for t in tasks)
            expected = ["link_up"] + ["link_down", "link_up"] * RESTARTS
            for device in devices:
                assert await link_events(gw, device, expected) == expected, device
            events = await gw.store.events("link_down")
    assert all(e.detail["reason"] for e in events)
    assert gw.sessions[devices[0]].reconnects >= RESTARTS
    assert not errors_logged(caplog)
