"""Reload, section by section, on a gateway with its market side (flexibility service,
north with the development PKI, the access endpoint): every section is either taken by the
running parts or the reload is refused as a whole, naming the sections that need a restart."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.loader import load_config
from gateway.market import Market
from gateway.north.certs import (
    AMS_IDENTITY,
    DEV_PARTIES,
    OPERATOR_IDENTITY,
    write_trust_file,
)
from gateway.north.config import Role
from gateway.north.tls import PeerIdentity
from gateway.ops.notify import Notifier
from gateway.ops.reload import reload
from gateway.smartapi.access import AccessService
from gateway.smartapi.codec import decode
from gateway.smartapi.encode import der_iri
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    Response,
    new_message_id,
)
from tests.support.memory_driver import MemoryDevice
from tests.support.north import signed
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.waiting import until
from tests.unit.gateway.ops.conftest import CONFIG as BASE_CONFIG
from tests.unit.gateway.ops.conftest import MAPPING, field_factory

CONFIG = (
    BASE_CONFIG
    + """flex: {control_cycle_s: 0.5}
north:
  identity: https://mgms.example/gateway
  tls: {ca: [pki/ca.pem], cert: pki/gateway.pem, key: pki/gateway.key}
  signing: {key: pki/gateway-signing.key, key_id: gateway-1, trust: pki/trust-gateway.yaml}
  allow:
    - {subject: ams, role: ams, senders: ["https://ams.example/ams"]}
    - {subject: operator, role: operator, senders: ["https://mgms.example/operator"]}
  server: {host: 127.0.0.1, port: 0}
  ams:
    forecast_url: https://127.0.0.1:9/smartapi/forecast
    verification_url: https://127.0.0.1:9/smartapi/verification
"""
)


@dataclass
class MarketRig:
    dir: Path
    gw: Gateway
    market: Market
    access: AccessService
    pki: PkiFiles
    notify: socket.socket
    notifier: Notifier

    def edit(self, old: str, new: str) -> None:
        path = self.dir / "gw.yaml"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new))

    async def reload(self) -> bool:
        return await reload(self.gw, lambda: load_config(self.dir / "gw.yaml"), self.notifier)

    def status(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.notify.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[MarketRig]:
    pki = make_test_pki(tmp_path / "pki")
    (tmp_path / "m.yaml").write_text(textwrap.dedent(MAPPING))
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    fields = {"dev-a": MemoryDevice(), "dev-b": MemoryDevice()}
    fields["dev-a"].values.update({"a.p": 4.0, "a.soc": 55.0, "a.set": 0.0})
    fields["dev-b"].values["b.p"] = -3.5
    config = load_config(tmp_path / "gw.yaml")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    notifier = Notifier(str(tmp_path / "notify.sock"))
    try:
        async with Gateway(config, driver_factory=field_factory(fields)) as gw:
            assert gw.market is not None
            access = gw.market.north.access
            assert isinstance(access, AccessService)
            await gw.market.north.started()
            yield MarketRig(tmp_path, gw, gw.market, access, pki, sock, notifier)
    finally:
        notifier.close()
        sock.close()


def read_request(rig: MarketRig, party: str = "operator") -> bytes:
    sender = OPERATOR_IDENTITY if party == "operator" else AMS_IDENTITY
    request = Request(
        id=new_message_id(),
        sender=sender,
        generated_at=datetime.now(UTC),
        activities=(Activity(method=Method.READ, entities=(Entity(iri=der_iri("mg", "bess")),)),),
    )
    return signed(rig.pki, party, request)


async def test_ders_are_applied_to_flex_and_the_access_endpoint(rig: MarketRig) -> None:
    flex = rig.market.flex
    assert flex.model.caps["bess"].der.ratings.p_max_kw == 10
    rig.edit("p_min_kw: -10, p_max_kw: 10", "p_min_kw: -6, p_max_kw: 6")
    assert await rig.reload()
    assert flex.model.caps["bess"].der.ratings.p_max_kw == 6
    assert flex.inputs.model is flex.model
    access_der = rig.access.config.der("bess")
    assert access_der is not None and access_der.ratings.p_max_kw == 6
    [status] = rig.status()[-1:]
    assert "STATUS=reloaded: ders applied; devices: 0 added" in status


async def test_coupling_point_limits_are_applied(rig: MarketRig) -> None:
    rig.edit("import_limit_kw: 10, export_limit_kw: 10", "import_limit_kw: 7, export_limit_kw: 5")
    assert await rig.reload()
    grid = rig.market.flex.model.grid
    assert (grid.import_kw, grid.export_kw) == (7, 5)


async def test_internal_limits_are_applied(rig: MarketRig) -> None:
    rig.edit(
        "flex: {control_cycle_s: 0.5}",
        "flex: {control_cycle_s: 0.5}\n"
        "internal_limits:\n"
        "  - {id: feeder1, ders: [bess], import_limit_kw: 3, export_limit_kw: 4}",
    )
    assert await rig.reload()
    [limit] = rig.market.flex.model.grid.internal
    assert (limit.id, limit.import_limit_kw) == ("feeder1", 3)


async def test_flex_settings_are_applied(rig: MarketRig) -> None:
    flex = rig.market.flex
    rig.edit("flex: {control_cycle_s: 0.5}", "flex: {control_cycle_s: 0.5, horizon_h: 6}")
    assert await rig.reload()
    assert flex.model.settings.horizon_h == 6
    # the running service plans on the new settings: a horizon of 6 h, 24 intervals
    await until(lambda: flex.plan is not None and flex.plan.horizon.count == 24, 20)


async def test_allow_list_is_applied(rig: MarketRig) -> None:
    allow = rig.market.north.allow
    newcomer = PeerIdentity("field-laptop", (), (), "00")
    assert allow.admit(newcomer) is None
    rig.edit(
        "  server: {host",
        "    - {subject: field-laptop, role: operator}\n  server: {host",
    )
    assert await rig.reload()
    peer = allow.admit(newcomer)
    assert peer is not None and peer.role is Role.OPERATOR
    assert rig.market.north.config.allow[-1].subject == "field-laptop"
    # and an entry removed is refused from then on
    ams = PeerIdentity(DEV_PARTIES["ams"][0], (), (), "00")
    assert allow.admit(ams) is not None
    rig.edit('    - {subject: ams, role: ams, senders: ["https://ams.example/ams"]}\n', "")
    assert await rig.reload()
    assert allow.admit(ams) is None


async def test_a_replaced_trust_file_is_re_read(rig: MarketRig) -> None:
    """The same config, the trust file rewritten without the operator: its signed reads
    are refused after the reload (before, they are answered)."""
    reply = await rig.access.handle(read_request(rig), "text/turtle", "operator")
    assert reply.status == 200, reply.body[:300]
    assert isinstance(decode(reply.body, reply.content_type), Response)
    write_trust_file(rig.pki.dev["trust-gateway"], ("ams",))
    assert await rig.reload()
    reply = await rig.access.handle(read_request(rig), "text/turtle", "operator")
    assert reply.status == 403, reply.body[:300]
    answer = decode(reply.body, reply.content_type)
    assert isinstance(answer, ErrorMessage) and "operator" in answer.message
    # the AMS, still trusted, reads on
    reply = await rig.access.handle(read_request(rig, "ams"), "text/turtle", "ams")
    assert reply.status == 200, reply.body[:300]


async def test_signing_section_points_at_new_files(rig: MarketRig) -> None:
    write_trust_file(rig.pki.dev.directory / "trust-ams-only.yaml", ("ams",))
    rig.edit("trust: pki/trust-gateway.yaml", "trust: pki/trust-ams-only.yaml")
    assert await rig.reload()
    assert rig.market.north.config.signing.trust.name == "trust-ams-only.yaml"
    reply = await rig.access.handle(read_request(rig), "text/turtle", "operator")
    assert reply.status == 403


async def test_retention_and_reconnect_cap_are_applied(rig: MarketRig) -> None:
    rig.edit("reconnect_max_s: 0.2", "reconnect_max_s: 7\nretention_days: 3")
    assert await rig.reload()
    assert rig.gw.config.gateway.retention_days == 3
    assert all(s._backoff.cap == 7 for s in rig.gw.sessions.values())


@pytest.mark.parametrize(
    ("old", "new", "sections"),
    [
        ("state_dir: state", "state_dir: elsewhere", "state_dir"),
        ("ops: {port: 0,", "ops: {port: 8799,", "ops"),
        ("microgrid: {id: mg,", "microgrid: {id: mg2,", "microgrid"),
        ("{host: 127.0.0.1, port: 0}", "{host: 127.0.0.1, port: 1}", "north.server"),
        ("https://127.0.0.1:9/smartapi/forecast", "https://127.0.0.1:8/f", "north.ams"),
    ],
)
async def test_restart_sections_refuse_the_whole_reload(
    rig: MarketRig, old: str, new: str, sections: str
) -> None:
    """A restart section changed together with live ones: nothing is applied, and the log,
    the store and systemd's STATUS= name the section."""
    before = rig.gw.config
    rig.edit(old, new)
    rig.edit("p_min_kw: -10, p_max_kw: 10", "p_min_kw: -6, p_max_kw: 6")
    assert not await rig.reload()
    assert rig.gw.config is before
    assert rig.market.flex.model.caps["bess"].der.ratings.p_max_kw == 10
    status = rig.status()[-1]
    assert f"STATUS=reload refused: {sections} need a restart; running on the old config" in status
    assert rig.gw.store is not None
    [event] = await rig.gw.store.events("reload_rejected")
    assert event.detail["restart_needed"] == [sections]


async def test_north_removed_needs_a_restart(rig: MarketRig) -> None:
    text = (rig.dir / "gw.yaml").read_text()
    (rig.dir / "gw.yaml").write_text(text.split("north:")[0])
    assert not await rig.reload()
    assert "STATUS=reload refused: north need a restart" in rig.status()[-1]
    assert rig.gw.config.gateway.north is not None


async def test_an_unreadable_key_refuses_everything(rig: MarketRig) -> None:
    """A part that cannot take the new config (north: the signing key is not a key) refuses
    the reload before any part, or any device, changed."""
    (rig.pki.dev.directory / "broken.key").write_text("not a key\n")
    rig.edit("key: pki/gateway-signing.key", "key: pki/broken.key")
    rig.edit("p_min_kw: -10, p_max_kw: 10", "p_min_kw: -6, p_max_kw: 6")
    (rig.dir / "m.yaml").write_text(
        textwrap.dedent(MAPPING).replace("poll_interval: 0.05", "poll_interval: 0.07")
    )
    sessions = dict(rig.gw.sessions)
    assert not await rig.reload()
    assert rig.market.flex.model.caps["bess"].der.ratings.p_max_kw == 10
    assert rig.gw.sessions == sessions
    assert rig.market.north.config.signing.key.name == "gateway-signing.key"
    status = rig.status()[-1]
    assert "STATUS=reload refused (north cannot take the new config:" in status
    assert "broken.key" in status
