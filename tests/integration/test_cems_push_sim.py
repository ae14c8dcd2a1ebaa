"""Push end to end: the simulated CEMS notifies the gateway's push endpoint when a value
changes, and the driver's sink gets the new value between two polls (poll interval 30 s):
the reading arrives through the push endpoint, with the notification's time, while the
driver sends no request. In the 1.1 profile the notification is signed and verified; a
CEMS whose key the gateway does not trust is refused with the reason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.cems.driver import CemsDriver
from drivers.cems.simulator import CemsFrontEnd
from fwsim.process import free_port
from fwsim.runner import build_grid
from gateway.acquisition import DeviceSession
from gateway.loader import load_config
from gateway.points import PointTable
from tests.support.cems import (
    CEMS_SENDER,
    GATEWAY_SENDER,
    SMARTAPI_POINTS,
    Running,
    SigningKeys,
    cems_options,
    running,
    write_site,
)
from tests.support.pki import PkiFiles
from tests.support.waiting import until

pytestmark = pytest.mark.integration

#: a poll interval no test waits for: what arrives, arrives by push
POLL_S = 30.0


def push_options(signing: dict[str, Any] | None = None, **extra: Any) -> Any:
    """The gateway listens for pushes; the simulated CEMS notifies every change."""
    port = free_port()

    def options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
        base = cems_options(pki, directory)
        gateway_cert, gateway_key = pki.pair("gateway")
        cems_cert, cems_key = pki.issue("cems-client", "cems")
        simulator = {
            **base["simulator"],
            "push": {
                "cert_file": str(cems_cert),
                "key_file": str(cems_key),
                "ca_file": str(pki.ca),
            },
        }
        if signing is not None and "simulator" in signing:
            simulator["signing"] = signing["simulator"]
        out = {
            **base,
            "smartapi_sender": GATEWAY_SENDER,
            "peer_sender": CEMS_SENDER,
            "push": {
                "host": "127.0.0.1",
                "port": port,
                "cert_file": str(gateway_cert),
                "key_file": str(gateway_key),
                "client_ca_file": str(pki.ca),
            },
            "simulator": simulator,
            **extra,
        }
        if signing is not None:
            out["signing"] = signing["gateway"]
        return out

    return options


@contextlib.asynccontextmanager
async def site(directory: Path, options: Any) -> AsyncIterator[Running]:
    base, _ = write_site(directory, points=SMARTAPI_POINTS, options=options, poll_interval=POLL_S)
    async with running(base, subscribe=True) as s:
        assert s.driver.device.poll_interval == POLL_S
        assert s.front.notifier is not None
        yield s


def _answers(s: Running) -> list[tuple[int, str]]:
    assert s.front.notifier is not None
    return s.front.notifier.answers


async def _changed_and_notified(s: Running, point_id: str, value: float) -> None:
    """Take the simulator's values in (first tick), change one, and tick again."""
    await s.front.refresh()
    s.front.values.write(s.point(point_id), value)
    await s.front.refresh()


async def test_a_changed_value_is_pushed_between_polls(tmp_path: Path) -> None:
    async with site(tmp_path, push_options()) as s:
        curtail = s.point("load2.curtail")
        (polled,) = await s.driver.read([curtail])  # the last poll before the change
        assert polled.quality.good and polled.value != pytest.approx(25.0)
        sent = s.driver.requests_sent
        before = datetime.now(UTC)
        await _changed_and_notified(s, "load2.curtail", 25.0)
        await asyncio.wait_for(s.arrived.wait(), timeout=10)
        assert _answers(s) and _answers(s)[-1][0] == 204
        pushed = [r for r in s.got if r.point == "load2.curtail"]
        assert [r.value for r in pushed] == [pytest.approx(25.0)]
        (reading,) = pushed
        assert reading.quality.good and reading.unit == "PERCENT"
        # stamped by the CEMS when it notified, after the poll
        assert reading.source_time is not None and reading.source_time >= before
        assert s.driver.requests_sent == sent  # no poll, no request: it came by push
        assert s.driver.push_delivered == len(s.got)


async def test_an_unchanged_value_is_not_pushed(tmp_path: Path) -> None:
    """Moving values aside (they change every tick), the written point is notified once."""
    async with site(tmp_path, push_options()) as s:
        await _changed_and_notified(s, "load2.curtail", 25.0)
        await s.front.refresh()  # nothing of load2.curtail changed since
        assert [r.value for r in s.got if r.point == "load2.curtail"] == [pytest.approx(25.0)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return SigningKeys.write(tmp_path_factory.mktemp("push-keys"))


async def test_a_signed_1_1_notification_is_verified_and_taken(
    tmp_path: Path, keys: SigningKeys
) -> None:
    options = push_options(
        {"gateway": keys.gateway(), "simulator": keys.cems()}, profile="smartapi-1.1"
    )
    async with site(tmp_path, options) as s:
        await _changed_and_notified(s, "load2.curtail", 30.0)
        await asyncio.wait_for(s.arrived.wait(), timeout=10)
        assert _answers(s)[-1][0] == 204
        assert [r.value for r in s.got if r.point == "load2.curtail"] == [pytest.approx(30.0)]


async def test_a_notification_signed_by_an_untrusted_key_is_refused(
    tmp_path: Path, keys: SigningKeys
) -> None:
    options = push_options(
        {"gateway": keys.gateway(), "simulator": keys.cems(keys.stranger_key)},
        profile="smartapi-1.1",
    )
    async with site(tmp_path, options) as s:
        await _changed_and_notified(s, "load2.curtail", 30.0)
        ((status, reason),) = _answers(s)
        assert status == 403
        assert "does not verify with " + CEMS_SENDER in reason
        assert s.got == []


async def test_an_unsigned_notification_is_refused_where_signing_is_required(
    tmp_path: Path, keys: SigningKeys
) -> None:
    options = push_options({"gateway": keys.gateway()})  # a CEMS that signs nothing
    async with site(tmp_path, options) as s:
        await _changed_and_notified(s, "load2.curtail", 30.0)
        ((status, reason),) = _answers(s)
        assert (status, reason) == (403, "refused: a signed message is required")
        assert s.got == []


async def test_the_gateway_point_table_takes_the_push_between_polls(tmp_path: Path) -> None:
    """The acquisition session (the gateway's own loop, poll interval 30 s) polls once on
    connecting; the pushed value then reaches the point table with no second poll."""
    base, _ = write_site(
        tmp_path, points=SMARTAPI_POINTS, options=push_options(), poll_interval=POLL_S
    )
    config = load_config(base)
    device = config.devices[0]
    front = CemsFrontEnd(device, build_grid(config), "127.0.0.1", device.connection.port or 0)
    await front.start()
    table = PointTable(config)

    async def no_events(*_: Any, **__: Any) -> None:
        return None

    session = DeviceSession(device, CemsDriver(device), table, no_events)
    task = asyncio.create_task(session.run())
    try:
        await until(lambda: table.latest("load2.curtail") is not None, within=10)
        polled = table.latest("load2.curtail")
        assert polled is not None and polled.value != pytest.approx(25.0)
        assert session.polls == 1
        curtail = next(p for p in device.points if p.id == "load2.curtail")
        changed_at = datetime.now(UTC)
        await front.refresh()
        front.values.write(curtail, 25.0)
        await front.refresh()
        await until(lambda: _value(table, "load2.curtail") == 25.0, within=10)
        latest = table.latest("load2.curtail")
        assert latest is not None and latest.source_time is not None
        assert latest.source_time >= changed_at
        assert session.polls == 1  # the next poll is 30 s away: it came by push
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await front.stop()


def _value(table: PointTable, point_id: str) -> float | None:
    reading = table.latest(point_id)
    if reading is None or not isinstance(reading.value, float):
        return None
    return round(reading.value, 6)
