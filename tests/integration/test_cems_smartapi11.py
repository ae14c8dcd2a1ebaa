"""A CEMS speaking Smart API 1.1 (the published library's forms: integer ids, NASA QUDT
units, the multipart signing scheme): the simulated CEMS signs its answers and verifies
the gateway's requests, the driver signs its requests and verifies the answers; a key that
is not trusted on either side makes the points invalid with the reason, never a value."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.loader import load_config
from gateway.model import Command, CommandStatus
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

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return SigningKeys.write(tmp_path_factory.mktemp("cems11-keys"))


def v11_options(
    keys: SigningKeys,
    *,
    gateway_key: Path | None = None,
    cems_key: Path | None = None,
    sign: bool = True,
    profile: str = "smartapi-1.1",
) -> Any:
    """A 1.1 CEMS (or one of `profile`) that signs and requires signatures; the gateway
    signs with `gateway_key` (default its own; `sign=False`: not at all) and the CEMS with
    `cems_key`."""

    def options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
        base = cems_options(pki, directory)
        out = {
            **base,
            "profile": profile,
            "timezone": "Europe/Helsinki",
            "smartapi_sender": GATEWAY_SENDER,
            "peer_sender": CEMS_SENDER,
            "simulator": {
                **base["simulator"],
                "signing": keys.cems(cems_key),
            },
        }
        if sign:
            out["signing"] = keys.gateway(gateway_key)
        return out

    return options


@contextlib.asynccontextmanager
async def site(directory: Path, options: Any) -> AsyncIterator[Running]:
    base, _ = write_site(directory, points=SMARTAPI_POINTS, options=options)
    async with running(base) as s:
        yield s


async def test_signed_11_read_gives_every_value_with_unit_and_time(
    tmp_path: Path, keys: SigningKeys
) -> None:
    async with site(tmp_path, v11_options(keys)) as s:
        points = s.driver.device.points
        before = datetime.now(UTC)
        readings = {r.point: r for r in await s.driver.read(points)}
        for point in points:
            reading = readings[point.id]
            assert reading.quality.good, (point.id, reading.quality)
            assert reading.unit == point.unit
            expected = s.front.values.value(point)
            assert reading.value == pytest.approx(expected, abs=1e-6), point.id
            assert reading.source_time is not None and reading.source_time >= before


async def test_a_signed_modern_cems_reads_and_refuses_a_stranger(
    tmp_path: Path, keys: SigningKeys
) -> None:
    """The modern profile signs with the secure profile's proof, verified the same way."""
    async with site(tmp_path / "ok", v11_options(keys, profile="modern")) as s:
        readings = await s.driver.read(s.driver.device.points)
        assert all(r.quality.good for r in readings), [r.detail for r in readings]
    bad = v11_options(keys, profile="modern", cems_key=keys.stranger_key)
    async with site(tmp_path / "bad", bad) as s:
        (reading,) = await s.driver.read([s.point("load2.p")])
        assert not reading.quality.good and "answer refused" in reading.detail, reading.detail
        assert "signature by key 'cems-1' does not match" in reading.detail


async def test_signed_11_write_is_applied(tmp_path: Path, keys: SigningKeys) -> None:
    async with site(tmp_path, v11_options(keys)) as s:
        point = s.point("load2.curtail")
        result = await s.driver.write(point, Command(point.id, 35.0))
        assert result.status is CommandStatus.CONFIRMED, result.detail
        assert s.front.values.value(point) == pytest.approx(35.0)


async def test_an_answer_signed_by_an_untrusted_key_gives_no_value(
    tmp_path: Path, keys: SigningKeys
) -> None:
    async with site(tmp_path, v11_options(keys, cems_key=keys.stranger_key)) as s:
        readings = await s.driver.read(s.driver.device.points)
        for reading in readings:
            assert not reading.quality.good
            assert "answer refused" in reading.detail
            assert "does not verify with " + CEMS_SENDER in reading.detail


async def test_an_unsigned_request_is_refused_by_the_cems(
    tmp_path: Path, keys: SigningKeys
) -> None:
    async with site(tmp_path, v11_options(keys, sign=False)) as s:
        point = s.point("load2.curtail")
        before = s.front.values.value(point)
        result = await s.driver.write(point, Command(point.id, 20.0))
        assert result.status is CommandStatus.REJECTED
        assert "HTTP 401" in (result.detail)
        assert s.front.values.value(point) == before


async def test_a_request_signed_by_a_stranger_is_refused_by_the_cems(
    tmp_path: Path, keys: SigningKeys
) -> None:
    async with site(tmp_path, v11_options(keys, gateway_key=keys.stranger_key)) as s:
        (reading,) = await s.driver.read([s.point("load2.p")])
        assert not reading.quality.good and "HTTP 401" in reading.detail


def test_a_1_1_cems_needs_an_rsa_key(tmp_path: Path, keys: SigningKeys) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = tmp_path / "ed.key"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    base, _ = write_site(
        tmp_path, points=SMARTAPI_POINTS, options=v11_options(keys, gateway_key=ed)
    )
    with pytest.raises(ConfigError, match=r"signing: .*ed.key is not an RSA key"):
        load_config(base)


def test_an_unknown_time_zone_is_named(tmp_path: Path, keys: SigningKeys) -> None:
    def options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
        return {**v11_options(keys)(pki, directory), "timezone": "Mars/Olympus"}

    base, _ = write_site(tmp_path, points=SMARTAPI_POINTS, options=options)
    with pytest.raises(ConfigError, match="timezone: unknown time zone 'Mars/Olympus'"):
        load_config(base)


async def test_a_cems_without_keys_refuses_a_signed_request(
    tmp_path: Path, keys: SigningKeys
) -> None:
    """Signing is on both sides or on neither: a CEMS that trusts no key cannot take a
    signed request (docs/cems.md)."""

    def options(pki: PkiFiles, directory: Path) -> dict[str, Any]:
        out: dict[str, Any] = v11_options(keys)(pki, directory)
        out["simulator"] = {k: v for k, v in out["simulator"].items() if k != "signing"}
        return out

    async with site(tmp_path, options) as s:
        (reading,) = await s.driver.read([s.point("load2.p")])
        assert not reading.quality.good and "HTTP 401" in reading.detail
