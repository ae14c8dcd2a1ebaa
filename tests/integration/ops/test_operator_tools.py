"""The operator's tools against a running gateway: `mgms point read|write` through the ops
listener with the operator's token, and `mgms smartapi read|write` signed and sent over
mutual TLS to the access endpoint of a gateway that has no AMS configured. The gateway runs
against the demo's Modbus devices in the simulator; the commands run as the real `mgms`
in their own processes."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import LoadedConfig
from gateway.mapping import Quantity
from gateway.north.certs import OPERATOR_IDENTITY, SIGNERS, dev_north_config, init_dev_pki
from gateway.ops.server import OpsServer
from tests.support.demo_site import demo_site
from tests.support.procs import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.integration

TOKEN = "operator-token-for-the-tools-test"


@dataclass
class Site:
    gw: Gateway
    config: LoadedConfig
    ops_url: str
    token_file: Path
    north_url: str
    pki: Path

    async def mgms(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def point(self, *args: str) -> tuple[int, str, str]:
        action, *rest = args
        return await self.mgms(
            "point", action, "--url", self.ops_url, "--token-file", str(self.token_file), *rest
        )

    async def smartapi(self, *args: str, party: str = "operator") -> tuple[int, str, str]:
        action, *rest = args
        key_id, sender, _ = SIGNERS[party]
        return await self.mgms(
            "smartapi",
            action,
            "--url",
            self.north_url,
            "--microgrid",
            "demo-microgrid",
            "--sender",
            sender,
            "--key-id",
            key_id,
            "--signing-key",
            str(self.pki / f"{party}-signing.key"),
            "--ca",
            str(self.pki / "ca.pem"),
            "--cert",
            str(self.pki / f"{party}.pem"),
            "--key",
            str(self.pki / f"{party}.key"),
            *rest,
        )


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    with demo_site(tmp_path / "state", {"modbus"}) as config:
        token_file = tmp_path / "operator.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        config.gateway.ops.operator_token_file = token_file
        pki = tmp_path / "certs"
        init_dev_pki(pki)
        north_port = free_port()
        north = dev_north_config(pki, ams_url="https://127.0.0.1:9", port=north_port)
        config.gateway.north = north.model_copy(update={"ams": None})  # no AMS at this site
        async with Gateway(config) as gw, OpsServer(gw, config.gateway.ops) as ops:
            assert gw.market is not None
            await gw.market.north.started()
            assert await gw.wait_connected(20)
            await until(lambda: gw.table.value("bess1", Quantity.STATE_OF_CHARGE) is not None)
            yield Site(
                gw,
                config,
                f"http://127.0.0.1:{ops.port}",
                token_file,
                f"https://127.0.0.1:{north_port}",
                pki,
            )


async def test_point_read_and_write_through_the_ops_listener(site: Site) -> None:
    gw = site.gw
    assert gw.controller is not None and gw.store is not None
    code, out, err = await site.point("read", "bess1.soc", "bess1.p")
    assert code == 0, err
    soc, p = out.splitlines()
    assert soc.startswith("bess1.soc") and "PERCENT" in soc and " good " in soc
    assert p.startswith("bess1.p ") and "KiloW" in p

    code, out, err = await site.point("write", "bess1.p_set", "12.5", "--by", "tester")
    assert code == 0, err
    assert out.strip() == "bess1.p_set = 12.5 KiloW: confirmed"
    await until(lambda: (gw.table.value("bess1", Quantity.ACTIVE_POWER) or 0) > 12, 10)
    [event] = [e for e in await gw.store.events("write") if e.point == "bess1.p_set"]
    assert event.detail["origin"] == "ops:tester" and event.detail["status"] == "confirmed"

    code, out, err = await site.point("read", "bess1.p_set")
    assert code == 0, err
    assert "last command: 12.5 confirmed at" in out and "by ops:tester" in out


async def test_point_writes_are_checked_before_anything_is_sent(site: Site) -> None:
    gw = site.gw
    assert gw.controller is not None and gw.store is not None
    sent = dict(gw.controller.sent)
    code, _, err = await site.point("write", "bess1.p_set", "1000")
    assert code == 1
    assert "bess1.p_set" in err and "HTTP 422" in err and "1000" in err
    code, _, err = await site.point("write", "bess1.soc", "50")
    assert code == 1 and "HTTP 409" in err and "bess1.soc" in err
    code, _, err = await site.point("write", "no.such.point", "1")
    assert code == 1 and "HTTP 404" in err and "no.such.point" in err
    code, _, err = await site.point("read", "bess1.soc", "nothing.here")
    assert code == 1 and "nothing.here" in err
    code, _, err = await site.mgms("point", "write", "bess1.p_set", "nan")
    assert code == 2 and "not a number" in err
    assert gw.controller.sent == sent  # nothing went to a device
    refused = await gw.store.events("write_refused")
    assert {e.point for e in refused} == {"bess1.p_set", "bess1.soc", "no.such.point"}


async def test_point_write_needs_the_operators_token(site: Site, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("x" * 32)
    wrong.chmod(0o600)
    code, _, err = await site.mgms(
        "point", "write", "--url", site.ops_url, "--token-file", str(wrong), "bess1.p_set", "1"
    )
    assert code == 1 and "HTTP 401" in err
    assert site.gw.controller is not None and not site.gw.controller.sent


async def test_smartapi_read_and_write_without_an_ams(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    code, out, err = await site.smartapi(
        "read", "--der", "bess1", "--trust", str(site.pki / "trust-ams.yaml")
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("# answer ") and "signature verified" in lines[0]
    assert any(" bess1.soc " in ln and "PERCENT" in ln for ln in lines[1:]), out

    code, out, err = await site.smartapi(
        "write", "--der", "bess1", "--point", "bess1.p_set", "--value", "8", "--unit", "KiloW"
    )
    assert code == 0, err
    assert any(ln.startswith("write ") and " bess1.p_set 8 KiloW" in ln for ln in out.splitlines())
    assert site.gw.controller is not None
    last = site.gw.controller.last["bess1.p_set"]
    assert last.ok and last.command.value == 8
    assert last.command.origin == f"smartapi:{OPERATOR_IDENTITY}"

    # beyond the point's limits: refused with the reason, nothing sent
    code, out, err = await site.smartapi(
        "write", "--der", "bess1", "--point", "bess1.p_set", "--value", "900", "--unit", "KiloW"
    )
    assert code == 1 and "refused (" in err and "bess1.p_set" in err
    assert site.gw.controller.last["bess1.p_set"].command.value == 8

    # no AMS: nothing queued for one, no delivery warnings
    assert site.gw.market is not None
    assert (await site.gw.market.north.outbox.stats()).pending == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "outbox" in r.name]
    assert not site.gw.market.north.has_ams


async def test_smartapi_requests_with_a_key_the_gateway_does_not_trust_are_refused(
    site: Site,
) -> None:
    """Signed with the gateway's own key under the operator's key id: the signature does
    not verify, the request is refused with the reason, and nothing is written."""
    assert site.gw.controller is not None
    code, out, err = await site.mgms(
        "smartapi",
        "write",
        "--url",
        site.north_url,
        "--microgrid",
        "demo-microgrid",
        "--der",
        "bess1",
        "--point",
        "bess1.p_set",
        "--value",
        "5",
        "--unit",
        "KiloW",
        "--sender",
        OPERATOR_IDENTITY,
        "--key-id",
        "operator-1",
        "--signing-key",
        str(site.pki / "gateway-signing.key"),
        "--ca",
        str(site.pki / "ca.pem"),
        "--cert",
        str(site.pki / "operator.pem"),
        "--key",
        str(site.pki / "operator.key"),
    )
    assert code == 1, out
    assert "refused (" in err and "Signature" in err, err
    assert "bess1.p_set" not in site.gw.controller.last
