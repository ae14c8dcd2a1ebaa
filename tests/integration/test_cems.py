"""The CEMS driver against the simulated building over HTTPS on loopback: mutual TLS, a
bearer token, one GET per path per poll, writes by template reaching the physics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.cems.driver import CemsDriver
from drivers.cems.protocol import CemsOptions
from drivers.cems.simulator import CemsFrontEnd
from drivers.registry import create_driver
from fwsim.frontend import create_front_end
from fwsim.physics import Microgrid
from fwsim.runner import build_grid
from gateway.errors import LinkError
from gateway.loader import load_config
from gateway.mapping import Device, Quantity
from gateway.model import Command, CommandStatus, QualityFlag
from tests.support.cems import TOKEN, write_site

pytestmark = pytest.mark.integration


@dataclass
class Site:
    device: Device
    grid: Microgrid
    front: CemsFrontEnd


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    config_path, _ = write_site(tmp_path)
    config = load_config(config_path)
    device = config.devices[0]
    grid = build_grid(config)
    front = create_front_end(device, grid, "127.0.0.1", device.connection.port or 0)
    assert isinstance(front, CemsFrontEnd)
    await front.start()
    try:
        yield Site(device, grid, front)
    finally:
        await front.stop()


async def test_registered_through_the_entry_point(site: Site) -> None:
    driver = create_driver(site.device)
    assert isinstance(driver, CemsDriver)


async def test_one_get_per_path_reads_every_point_scaled(site: Site) -> None:
    driver = CemsDriver(site.device)
    await driver.connect()
    try:
        readable = [p for p in site.device.points if p.direction.readable]
        before = driver.requests_sent
        readings = await driver.read(readable)
        assert driver.requests_sent - before == 1  # five points, one resource
        assert all(r.quality.good for r in readings), readings
        values = {r.point: r.value for r in readings}
        ev_kw = site.grid.value("ev1", Quantity.ACTIVE_POWER)
        assert values["ev1.p"] == pytest.approx(ev_kw, abs=1e-9)  # watts on the wire
        load_kw = site.grid.value("load2", Quantity.ACTIVE_POWER)
        assert values["load2.p"] == pytest.approx(load_kw, abs=1e-9)
        assert load_kw < 0  # the building consumes
    finally:
        await driver.close()


async def test_writes_by_template_reach_the_physics(site: Site) -> None:
    driver = CemsDriver(site.device)
    await driver.connect()
    points = {p.id: p for p in site.device.points}
    try:
        result = await driver.write(points["load2.curtail_set"], Command("load2.curtail_set", 30))
        assert result.status is CommandStatus.CONFIRMED, result.detail
        assert site.grid.value("load2", Quantity.ACTIVE_POWER_LIMIT) == 30
        result = await driver.write(points["ev1.limit_set"], Command("ev1.limit_set", 45.5))
        assert result.status is CommandStatus.CONFIRMED, result.detail
        assert site.grid.value("ev1", Quantity.ACTIVE_POWER_LIMIT) == pytest.approx(45.5)
        (reading,) = await driver.read([points["ev1.limit"]])
        assert reading.value == pytest.approx(45.5)
    finally:
        await driver.close()


async def test_without_the_token_points_say_401(tmp_path: Path, site: Site) -> None:
    options = dict(site.device.options)
    del options["token_file"]
    device = _with_options(site.device, options)
    driver = CemsDriver(device)
    await driver.connect()  # the CEMS answers (401): the link is up
    try:
        readings = await driver.read([p for p in device.points if p.direction.readable])
        assert all(not r.quality.good for r in readings)
        assert all("HTTP 401" in r.detail for r in readings), readings[0].detail
        assert all(QualityFlag.FAILURE in r.quality.flags for r in readings)
    finally:
        await driver.close()
    assert TOKEN not in readings[0].detail


async def test_without_a_client_certificate_the_link_fails(site: Site) -> None:
    options = dict(site.device.options)
    del options["cert_file"], options["key_file"]
    driver = CemsDriver(_with_options(site.device, options))
    with pytest.raises(LinkError, match="building2-cems"):
        await driver.connect()
    assert not driver.connected


async def test_a_server_from_another_ca_is_refused(tmp_path: Path) -> None:
    """The simulator presents a certificate our CA did not sign: no connection."""
    config_path, pki = write_site(tmp_path)
    config = load_config(config_path)
    device = config.devices[0]
    stranger_cert, stranger_key = pki.stranger
    served = _with_options(
        device,
        {
            **device.options,
            "simulator": {"cert_file": str(stranger_cert), "key_file": str(stranger_key)},
        },
    )
    front = CemsFrontEnd(served, build_grid(config), "127.0.0.1", device.connection.port or 0)
    await front.start()
    try:
        driver = CemsDriver(device)
        with pytest.raises(LinkError, match="certificate not accepted"):
            await driver.connect()
    finally:
        await front.stop()


def _with_options(device: Device, options: dict[str, object]) -> Device:
    """The device with other options, validated as the loader does it."""
    typed = device.typed_options
    assert isinstance(typed, CemsOptions)
    copy = device.model_copy(update={"options": options})
    copy._options = CemsOptions.model_validate(options, context={"base_dir": typed.base_dir})
    copy._addresses = dict(device._addresses)
    return copy


async def test_server_name_checks_the_certificate_for_another_name(tmp_path: Path) -> None:
    """Reached by address, verified by name: the certificate names only the CEMS's host
    name; without `server_name` the connection is refused, with it accepted."""
    config_path, pki = write_site(tmp_path)
    config = load_config(config_path)
    device = config.devices[0]
    named_cert, named_key = pki.issue("named", "cems", hosts=["cems.building2.example"])
    served = _with_options(
        device,
        {**device.options, "simulator": {"cert_file": str(named_cert), "key_file": str(named_key)}},
    )
    front = CemsFrontEnd(served, build_grid(config), "127.0.0.1", device.connection.port or 0)
    await front.start()
    try:
        with pytest.raises(LinkError, match="certificate not accepted"):
            await CemsDriver(device).connect()
        named = _with_options(device, {**device.options, "server_name": "cems.building2.example"})
        driver = CemsDriver(named)
        await driver.connect()
        try:
            (reading,) = await driver.read([device.points[0]])
            assert reading.quality.good, reading.detail
        finally:
            await driver.close()
    finally:
        await front.stop()
