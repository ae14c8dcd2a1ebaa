"""The operations listener over real HTTP on loopback: health, metrics, status, access."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.config import OpsConfig
from gateway.errors import ConfigError, ServiceError
from gateway.loader import load_config
from gateway.model import Command
from gateway.ops.server import OpsServer
from gateway.ops.status import ActivationView, FlexStatus, NotificationView, SeriesPoint
from tests.support.procs import free_port
from tests.support.waiting import until
from tests.unit.gateway.ops.conftest import CONFIG, Rig

TIMEOUT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def http(rig: Rig) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with (
        OpsServer(rig.gw, rig.gw.config.gateway.ops) as ops,
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
    ):
        yield session, f"http://127.0.0.1:{ops.port}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_health_and_readiness_follow_the_links(
    rig: Rig, http: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = http
    assert await rig.gw.wait_connected(2.0)
    await until(lambda: rig.gw.health.ready().ok)
    async with session.get(base + "/readyz") as r:
        assert r.status == 200
        body = await r.json()
        assert body["checks"]["devices"] == {"ok": True, "detail": "2 devices up"}
    rig.fields["dev-b"].link_up = False
    await until(lambda: not rig.gw.sessions["dev-b"].up)
    async with session.get(base + "/readyz") as r:
        assert r.status == 503
        assert "dev-b" in (await r.json())["checks"]["devices"]["detail"]
    async with session.get(base + "/healthz") as r:  # down links are no reason to restart
        assert r.status == 200
        assert (await r.json())["checks"]["store"]["ok"]


async def test_liveness_fails_when_the_store_stops_flushing(
    rig: Rig, http: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = http
    rig.gw.last_flush -= 120
    async with session.get(base + "/healthz") as r:
        assert r.status == 503
        assert "no successful flush" in (await r.json())["checks"]["store"]["detail"]


async def test_metrics(rig: Rig, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    gw = rig.gw
    assert await gw.wait_connected(2.0) and gw.controller is not None
    await until(lambda: gw.sessions["dev-a"].polls >= 3 and gw.sessions["dev-b"].polls >= 3)
    await gw.controller.write(Command("a.set", 3))
    async with session.get(base + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        got = samples(await r.text())
    assert got[("mgms_device_up", (("device", "dev-a"), ("protocol", "modbus")))] == 1
    count = got[("mgms_poll_duration_seconds_count", (("device", "dev-b"),))]
    assert count >= 3
    inf = got[("mgms_poll_duration_seconds_bucket", (("device", "dev-b"), ("le", "+Inf")))]
    assert inf == count
    assert got[("mgms_points", (("device", "dev-b"), ("validity", "invalid")))] == 1
    assert got[("mgms_points", (("device", "dev-b"), ("validity", "good")))] == 1
    assert got[("mgms_points", (("device", "dev-a"), ("validity", "good")))] == 3  # with a.set
    assert got[("mgms_writes_sent_total", (("protocol", "modbus"),))] == 1
    assert got[("mgms_writes_confirmed_total", (("protocol", "modbus"),))] == 1
    assert got[("mgms_device_reconnects_total", (("device", "dev-a"),))] == 0
    assert ("mgms_build_info", (("version", __version__),)) in got


async def test_a_part_registers_its_own_metrics_and_readiness(
    rig: Rig, http: tuple[aiohttp.ClientSession, str]
) -> None:
    """The way the northbound outbox hooks in: callback gauges and a readiness check."""
    session, base = http
    outbox = [datetime.now(UTC) - timedelta(seconds=90)]
    rig.gw.metrics.callback(
        "mgms_outbox_depth", "Messages waiting.", "gauge", lambda: [((), len(outbox))]
    )
    rig.gw.health.add_readiness(
        "outbox",
        lambda: _outbox_check(outbox),
    )
    async with session.get(base + "/metrics") as r:
        assert samples(await r.text())[("mgms_outbox_depth", ())] == 1
    async with session.get(base + "/readyz") as r:
        body = await r.json()
    assert r.status == 503
    assert body["checks"]["outbox"] == {"ok": False, "detail": "oldest message 90 s old"}


def _outbox_check(outbox: list[datetime]):  # type: ignore[no-untyped-def]
    from gateway.ops.health import CheckResult

    age = (datetime.now(UTC) - min(outbox)).total_seconds() if outbox else 0
    return CheckResult(age < 60, f"oldest message {age:.0f} s old")


async def test_status_json_and_page(rig: Rig, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    assert await rig.gw.wait_connected(2.0)
    await until(lambda: rig.gw.table.latest("a.soc") is not None)
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    series = [
        SeriesPoint(start + timedelta(seconds=i), 5.0, 8.0, 8.0 - min(i, 3)) for i in range(6)
    ]
    rig.gw.status.set_flex_source(
        lambda: FlexStatus(
            NotificationView("rn-1", start, start + timedelta(hours=1), 4),
            ActivationView("ra-7", "active", start, p_kw=5.0, series=series),
        )
    )
    async with session.get(base + "/api/status") as r:
        status = await r.json()
    assert status["microgrid"] == "mg"
    assert {d["id"]: d["up"] for d in status["devices"]} == {"dev-a": True, "dev-b": True}
    bess = next(d for d in status["ders"] if d["id"] == "bess")
    assert bess["p_kw"] == 4.0 and bess["soc_pct"] == 55.0
    assert status["flex"]["activation"]["id"] == "ra-7"
    assert len(status["flex"]["activation"]["series"]) == 6
    async with session.get(base + "/") as r:
        assert r.status == 200
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        page = await r.text()
    assert "Test &lt;grid&gt;" in page and "<grid>" not in page
    assert 'class="series-measured"' in page and "ra-7" in page
    async with session.post(base + "/", data=b"x") as r:
        assert r.status == 405  # read-only


async def test_status_shows_the_last_command_of_a_point(
    rig: Rig, http: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = http
    gw = rig.gw
    assert await gw.wait_connected(2.0) and gw.controller is not None
    async with session.get(base + "/api/status") as r:
        before = {p["id"]: p for p in (await r.json())["points"]}
    assert before["a.set"]["command"] is None and before["a.set"]["direction"] == "read-write"
    await gw.controller.write(Command("a.set", 3, origin="op-1"))
    rig.fields["dev-a"].refuse.add("a.set")
    await gw.controller.write(Command("a.set", 4, origin="op-2"))
    async with session.get(base + "/api/status") as r:
        after = {p["id"]: p for p in (await r.json())["points"]}
    command = after["a.set"]["command"]
    assert (command["value"], command["status"], command["confirmed"]) == (4, "rejected", False)
    assert command["origin"] == "op-2" and command["detail"] == "illegal data address"
    assert datetime.fromisoformat(command["time"]) <= datetime.now(UTC)
    async with session.get(base + "/api/status?q=a.set") as r:
        assert [p["id"] for p in (await r.json())["points"]] == ["a.set"]
    async with session.get(base + "/?q=a.set") as r:
        page = await r.text()
    assert "4 rejected at" in page and "by op-2" in page


async def test_point_writes_need_a_token_even_on_loopback(
    rig: Rig, http: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = http
    assert await rig.gw.wait_connected(2.0) and rig.gw.controller is not None
    async with session.post(base + "/api/points/a.set", json={"value": 3}) as r:
        assert r.status == 403
        assert "ops.operator_token_file" in (await r.json())["error"]
    assert not rig.gw.controller.sent
    async with session.get(base + "/api/points?id=a.soc") as r:  # reading is open on loopback
        assert r.status == 200
        [row] = (await r.json())["points"]
    assert (row["id"], row["value"], row["unit"]) == ("a.soc", 55.0, "PERCENT")


async def test_token_guards_everything_but_liveness(tmp_path: Path, rig: Rig) -> None:
    token_file = tmp_path / "operator.token"
    token_file.write_text("s3cret-operator-token-0123\n")
    token_file.chmod(0o600)
    cfg = OpsConfig(port=0, operator_token_file=token_file)
    async with (
        OpsServer(rig.gw, cfg) as ops,
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
    ):
        base = f"http://127.0.0.1:{ops.port}"
        for path in ("/", "/metrics", "/readyz", "/api/status"):
            async with session.get(base + path) as r:
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            wrong = {"Authorization": "Bearer s3cret-operator-token-0124"}
            async with session.get(base + path, headers=wrong) as r:
                assert r.status == 401, path
        good = {"Authorization": "Bearer s3cret-operator-token-0123"}
        async with session.get(base + "/metrics", headers=good) as r:
            assert r.status == 200
        async with session.get(base + "/healthz") as r:
            assert r.status == 200


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("long-enough-token-123", 0o644, "lets others read it"),
        ("short", 0o600, "shorter than 16"),
    ],
)
async def test_bad_token_files_are_refused(
    tmp_path: Path, rig: Rig, content: str, mode: int, message: str
) -> None:
    token_file = tmp_path / "t"
    token_file.write_text(content)
    token_file.chmod(mode)
    with pytest.raises(ServiceError, match=message):
        async with OpsServer(rig.gw, OpsConfig(port=0, operator_token_file=token_file)):
            pass
    with pytest.raises(ServiceError, match="cannot read"):
        async with OpsServer(rig.gw, OpsConfig(port=0, operator_token_file=tmp_path / "no")):
            pass


async def test_a_taken_port_is_a_clear_error(rig: Rig) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(ServiceError, match=f"127.0.0.1:{port}: cannot bind"):
            async with OpsServer(rig.gw, OpsConfig(port=port)):
                pass


async def test_disabled_listener_binds_nothing(rig: Rig) -> None:
    async with OpsServer(rig.gw, OpsConfig(enabled=False)) as ops:
        assert ops.port is None


def test_listening_off_loopback_needs_a_token(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("devices: []\n")
    cfg = textwrap.dedent(CONFIG).replace("ops: {port: 0,", "ops: {listen: 0.0.0.0, port: 0,")
    (tmp_path / "gw.yaml").write_text(cfg)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "gw.yaml")
    assert "not loopback: set operator_token_file" in str(err.value)
    assert "gw.yaml" in str(err.value) and "ops" in str(err.value)
    bad = cfg.replace("listen: 0.0.0.0", "listen: gateway.local")
    (tmp_path / "gw.yaml").write_text(bad)
    with pytest.raises(ConfigError, match="listen must be an IP address"):
        load_config(tmp_path / "gw.yaml")
