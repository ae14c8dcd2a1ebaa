"""docs/cems.md's option examples run as written: each block tagged `<!-- options: TAG -->`
is loaded as it stands (its files put at the paths it names, the push port made free), and
the gateway reads, writes and receives pushes through it from the simulator."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from fwsim.process import free_port
from gateway.model import Command, CommandStatus
from tests.support.cems import SMARTAPI_POINTS, running, write_rsa_pair, write_site, write_trust
from tests.support.pki import PkiFiles
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "cems.md"
_TAGGED = re.compile(r"<!-- options: ([^ ]+) -->\n```yaml\n(.*?)```", re.S)


def documented(tag: str) -> dict[str, Any]:
    [body] = [b for t, b in _TAGGED.findall(DOC.read_text()) if t == tag]
    options = yaml.safe_load(body)["options"]
    assert isinstance(options, dict)
    return options


def _secrets(pki: PkiFiles, directory: Path) -> None:
    """Every file the examples name, under `directory/secrets`."""
    d = directory / "secrets"
    d.mkdir()
    shutil.copy(pki.ca, d / "cems-ca.pem")
    for stem, (cert, key) in {
        "cems": pki.issue("cems-server", "cems"),
        "cems-client": pki.issue("cems-client", "cems"),
        "gateway": pki.pair("gateway"),
    }.items():
        shutil.copy(cert, d / f"{stem}.pem")
        shutil.copy(key, d / f"{stem}.key")
    write_rsa_pair(d, "gateway-smartapi")
    write_rsa_pair(d, "cems-smartapi")
    shutil.copy(d / "cems-smartapi.pub", d / "cems-1.pub.pem")
    cems = documented("smartapi-1.1-signed")["peer_sender"]
    gateway = documented("smartapi-1.1-signed")["smartapi_sender"]
    write_trust(d / "cems-trust.yaml", "cems-1", cems, Path("cems-1.pub.pem"))
    write_trust(d / "gateway-trust.yaml", "mgms-1", gateway, d / "gateway-smartapi.pub")


def _options(*tags: str) -> Any:
    def options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
        _secrets(pki, directory)
        merged: dict[str, Any] = {}
        for tag in tags:
            merged |= documented(tag)
        if "push" in merged:  # the documented 0.0.0.0:8443, on a free loopback port
            merged["push"] |= {"host": "127.0.0.1", "port": free_port()}
        return merged

    return options


async def test_the_documented_signed_1_1_options_read_and_write(tmp_path: Path) -> None:
    options = _options("smartapi-1.1-signed", "push", "simulator")
    base, _ = write_site(tmp_path, points=SMARTAPI_POINTS, options=options)
    async with running(base) as s:
        readings = await s.driver.read(s.driver.device.points)
        assert all(r.quality.good for r in readings), [r.detail for r in readings]
        curtail = s.point("load2.curtail")
        result = await s.driver.write(curtail, Command(curtail.id, 15.0))
        assert result.status is CommandStatus.CONFIRMED, result.detail
        assert s.front.values.value(curtail) == pytest.approx(15.0)


async def test_the_documented_push_options_deliver_a_change(tmp_path: Path) -> None:
    options = _options("smartapi-1.1-signed", "push", "simulator")
    base, _ = write_site(tmp_path, points=SMARTAPI_POINTS, options=options)
    async with running(base, subscribe=True) as s:
        curtail = s.point("load2.curtail")
        await s.front.refresh()
        s.front.values.write(curtail, 42.0)  # moves by more than the documented min_change
        await s.front.refresh()
        await asyncio.wait_for(s.arrived.wait(), timeout=10)
        assert [r.value for r in s.got if r.point == curtail.id] == [pytest.approx(42.0)]
