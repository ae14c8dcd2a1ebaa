"""Field links cut and restored without touching any process: the simulators run in a
network namespace behind a veth pair, and the test pulls the cable (see netns.py).

While the link is down every device behind it is marked invalid after its own timeout, the
witness device on loopback keeps polling, and once the link is back each device reconnects
on its own; the simulators never restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.field import (
    DEVICES,
    LONG,
    WITNESS,
    field_config,
    gateway_for,
    is_comm_failure,
    is_good,
    link_events,
    readable,
)
from tests.faults.netns import netns_link
from tests.support.procs import free_port, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

CUTS = 10 if LONG else 2


@pytest.mark.timeout(60 + 40 * CUTS)
async def test_link_cut_and_restored(tmp_path: Path) -> None:
    behind = list(DEVICES.values())
    with netns_link() as link:
        config = field_config(tmp_path, {d: link.field_ip for d in behind})
        ports = {d: free_port() for d in [*behind, WITNESS]}
        remote = start_sim(config, {d: ports[d] for d in behind}, behind, prefix=link.prefix)
        witness = start_sim(config, {WITNESS: ports[WITNESS]}, [WITNESS])
        try:
            async with gateway_for(tmp_path / "state", ports, config) as gw:
                assert gw.store is not None
                assert await gw.wait_connected(20)
                await until(lambda: all(is_good(gw, p) for d in ports for p in readable(gw, d)))
                for _ in range(CUTS):
                    await asyncio.to_thread(link.cut)
                    polls = gw.sessions[WITNESS].polls
                    await until(lambda: not any(gw.sessions[d].up for d in behind), within=30)
                    for device in behind:
                        assert all(is_comm_failure(gw, p) for p in readable(gw, device)), device
                    assert gw.sessions[WITNESS].up and gw.sessions[WITNESS].polls > polls + 4
                    assert all(is_good(gw, p) for p in readable(gw, WITNESS))
                    await asyncio.to_thread(link.restore)
                    await until(lambda: all(gw.sessions[d].up for d in behind), within=30)
                    await until(
                        lambda: all(is_good(gw, p) for d in behind for p in readable(gw, d))
                    )
                expected = ["link_up"] + ["link_down", "link_up"] * CUTS
                for device in behind:
                    assert await link_events(gw, device, expected) == expected, device
                assert await link_events(gw, WITNESS, ["link_up"]) == ["link_up"]
            # nothing was restarted: the link alone failed
            assert remote.proc.poll() is None and witness.proc.poll() is None
        finally:
            remote.stop()
            witness.stop()
