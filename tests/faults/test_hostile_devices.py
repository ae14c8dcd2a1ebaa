"""Devices that misbehave instead of dying: one that accepts the connection and never
answers, one that answers garbage, one whose answers come late, one that refuses the
association. Every wait ends within the device's own timeouts, every failure reaches the
store as one event whose reason says what happened, and the other devices keep polling."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.model import Command, CommandStatus
from tests.faults.field import (
    DEVICES,
    WITNESS,
    errors_logged,
    field,
    field_config,
    gateway_for,
    is_comm_failure,
    is_good,
    link_events,
    readable,
)
from tests.faults.rogue import Answers, Behaviour, Proxy, Rogue
from tests.support.procs import ROOT, free_port, start_sim
from tests.support.waiting import until

pytestmark = pytest.mark.integration

#: what the link-down reason says about a device that never answers / answers garbage
REASONS = {
    Behaviour.SILENT: {
        "modbus": "no answer within 0.5 s",
        "iec104": "accepted the connection but did not confirm STARTDT within t0=2 s",
        "iec61850": "connect to 127.0.0.1",
        "dlms": "timed out",
    },
    Behaviour.GARBAGE: {
        "modbus": "no answer within 0.5 s",  # pymodbus drops what does not frame
        "iec104": "connection lost",
        "iec61850": "connect to 127.0.0.1",
        "dlms": "not a WRAPPER frame",
    },
}


@pytest.mark.parametrize("behaviour", list(Behaviour), ids=lambda b: b.value)
async def test_device_that_never_answers_or_answers_garbage(
    tmp_path: Path, behaviour: Behaviour, caplog: pytest.LogCaptureFixture
) -> None:
    with field([WITNESS]) as f:
        async with contextlib.AsyncExitStack() as stack:
            rogues = {p: await stack.enter_async_context(Rogue(behaviour)) for p in DEVICES}
            ports = {DEVICES[p]: r.port for p, r in rogues.items()} | f.ports
            async with gateway_for(tmp_path, ports) as gw:
                assert gw.store is not None
                # every device is retried again and again, each attempt ending in time
                await until(lambda: all(r.connections >= 3 for r in rogues.values()), within=30)
                await until(lambda: gw.sessions[WITNESS].polls >= 10)
                assert gw.sessions[WITNESS].up
                assert all(is_good(gw, p) for p in readable(gw, WITNESS))
                for protocol in DEVICES:
                    assert all(is_comm_failure(gw, p) for p in readable(gw, DEVICES[protocol]))
                events = await gw.store.events()
    for protocol, device in DEVICES.items():
        assert rogues[protocol].received > 0  # the driver asked, then gave up waiting
        logged = [e for e in events if e.device == device]
        assert [e.kind for e in logged] == ["link_down"], (device, logged)
        reason = logged[0].detail["reason"]
        assert f"device {device!r}" in reason and REASONS[behaviour][protocol] in reason, reason
    assert [e.kind for e in events if e.device == WITNESS] == ["link_up"]
    assert not errors_logged(caplog)


def delays(gw: Gateway, proxies: dict[str, Proxy], factor: float) -> None:
    for device, proxy in proxies.items():
        proxy.delay = gw.sessions[device].device.timeout * factor


async def recovered(gw: Gateway, devices: list[str], proxies: dict[str, Proxy]) -> None:
    for proxy in proxies.values():
        proxy.answers, proxy.delay = Answers.PASS, 0.0
    await until(lambda: all(gw.sessions[d].up for d in devices), within=30)
    await until(lambda: all(is_good(gw, p) for d in devices for p in readable(gw, d)))


async def all_down(gw: Gateway, devices: list[str]) -> None:
    await until(lambda: not any(gw.sessions[d].up for d in devices), within=30)
    for device in devices:
        assert all(is_comm_failure(gw, p) for p in readable(gw, device)), device


@pytest.mark.timeout(180)
async def test_answers_slow_garbled_or_swallowed_mid_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each device of each protocol behind a proxy that turns bad while connected; after
    each phase the device behaves again and the gateway recovers it on its own."""
    devices = list(DEVICES.values())
    ports = {d: free_port() for d in [*devices, WITNESS]}
    sim = start_sim(field_config(tmp_path), ports, [*devices, WITNESS])
    try:
        async with contextlib.AsyncExitStack() as stack:
            proxies = {d: await stack.enter_async_context(Proxy(ports[d])) for d in devices}
            via_proxy = {d: proxies[d].port for d in devices} | {WITNESS: ports[WITNESS]}
            async with gateway_for(tmp_path / "state", via_proxy) as gw:
                assert gw.store is not None and gw.controller is not None
                await recovered(gw, devices, proxies)

                # answers late but within the device timeouts: nothing fails
                delays(gw, proxies, 0.4)
                polls = {d: gw.sessions[d].polls for d in devices}
                await until(lambda: all(gw.sessions[d].polls >= polls[d] + 3 for d in devices))
                assert all(gw.sessions[d].up for d in devices)
                assert all(is_good(gw, p) for d in devices for p in readable(gw, d))
                assert max(gw.sessions[d].last_poll_s for d in devices) > 0.2  # it was slow

                # garbage instead of answers: every driver drops the link (none keeps
                # reading a stream that is out of step) and reconnects once answers are sane
                for proxy in proxies.values():
                    proxy.answers = Answers.GARBAGE
                await all_down(gw, devices)
                await recovered(gw, devices, proxies)

                # answers later than the timeouts: polls fail in time; IEC 104 has no polls
                # (the outstation reports), a command to it times out in time
                delays(gw, proxies, 3.0)
                polled = [d for d in devices if d != DEVICES["iec104"]]
                await all_down(gw, polled)
                result = await asyncio.wait_for(
                    gw.controller.write(Command("chp1.p_set", 20.0)), timeout=10
                )
                assert result.status is CommandStatus.TIMEOUT, result
                assert "within 1 s" in result.detail
                await recovered(gw, devices, proxies)

                # answers swallowed (the TCP connection stays up)
                for proxy in proxies.values():
                    proxy.answers = Answers.SWALLOW
                await all_down(gw, devices)
                await recovered(gw, devices, proxies)
                assert gw.sessions[WITNESS].up and gw.sessions[WITNESS].reconnects == 0
                for device in devices:
                    failures = 2 if device == DEVICES["iec104"] else 3
                    expected = ["link_up"] + ["link_down", "link_up"] * failures
                    assert await link_events(gw, device, expected) == expected, device
    finally:
        sim.stop()
    assert not errors_logged(caplog)


async def test_meter_refusing_the_association(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password is the operator's to fix: one clear event, no traceback, and the
    gateway keeps trying (a meter may be re-keyed) without flooding the log."""
    meter = DEVICES["dlms"]
    wrong = ROOT / "tests" / "integration" / "dlms" / "secrets" / "wrong.password"
    config = field_config(tmp_path, options={meter: {"password_file": str(wrong)}})
    with field([meter]) as f:
        async with gateway_for(tmp_path / "state", f.ports, config) as gw:
            assert gw.store is not None
            await until(lambda: gw.sessions[meter].reconnects >= 3, within=30)
            events = await gw.store.events()
    logged = [e for e in events if e.device == meter]
    assert [e.kind for e in logged] == ["link_down"]
    assert "association rejected: authentication failure" in logged[0].detail["reason"]
    assert not errors_logged(caplog)
