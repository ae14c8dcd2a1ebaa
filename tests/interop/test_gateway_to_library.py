"""The gateway's messages in the Smart API 1.1 profile, read by the published library as an
AMS on it would: Flexibility Forecast and Reserve Verification notifications (unsigned in
Turtle, JSON-LD and N-Triples; signed and encrypted the 1.1 way), compared field by field:
values, units, quantities, times, ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.north.codec import SmartApiCodec
from gateway.smartapi import examples
from gateway.smartapi.codec import Format, serialize
from gateway.smartapi.encode import to_tree
from gateway.smartapi.flexibility import FlexibilityForecast, ForecastInterval
from gateway.smartapi.interop import integer_id, to_v11
from gateway.smartapi.security.profile import OutboundSecurity
from tests.interop.conftest import GATEWAY, PEER, Keys
from tests.interop.peer import LibraryPeer

SA = "http://smart-api.io/ontology/1.0/smartapi#"
NASA_KW = "http://data.nasa.gov/qudt/owl/unit#Kilowatt"
NASA_KVAR = "http://data.nasa.gov/qudt/owl/unit#KilovoltAmpereReactive"
START = datetime(2026, 6, 2, 0, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
RDF_FORMATS = {"turtle": Format.TURTLE, "json-ld": Format.JSONLD, "nt": Format.NTRIPLES}


def day_forecast() -> FlexibilityForecast:
    """96 intervals of a day, every value different, so that order and pairing show."""
    return FlexibilityForecast(
        id="3f1c2a8e-5d4b-4c7a-9e0f-1a2b3c4d5e6f",
        sender=GATEWAY,
        generated_at=START - timedelta(minutes=5),
        microgrid=examples.MICROGRID,
        start=START,
        step=STEP,
        intervals=tuple(
            ForecastInterval(
                p_kw=40.0 + i / 4,
                p_min_kw=-10.0 - i,
                p_max_kw=90.0 + i,
                q_kvar=5.0 + i / 8,
                q_min_kvar=-25.0,
                q_max_kvar=35.0,
            )
            for i in range(96)
        ),
    )


def series_by_name(activity: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    found: dict[tuple[str, str], dict[str, object]] = {}
    for ts in activity["series"]:  # type: ignore[attr-defined]
        found[(ts["name"], ts["quantity"])] = ts
    return found


def check_day_forecast(answer: dict[str, object], msg: FlexibilityForecast) -> None:
    assert answer["id"] == integer_id(msg.id)
    assert answer["generated_by"] == GATEWAY
    assert answer["generated_at"] == msg.generated_at.isoformat()
    (activity,) = answer["activities"]  # type: ignore[misc]
    (entity,) = activity["entities"]
    assert entity["iri"] == f"urn:mgms:microgrid:{examples.MICROGRID}"
    assert entity["class"] == "Device"  # kept by the library's class mapper
    series = series_by_name(activity)
    expected = {
        ("Baseline", SA + "ActivePower"): (NASA_KW, [r.p_kw for r in msg.intervals]),
        ("Maximum", SA + "ActivePower"): (NASA_KW, [r.p_max_kw for r in msg.intervals]),
        ("Minimum", SA + "ActivePower"): (NASA_KW, [r.p_min_kw for r in msg.intervals]),
        ("Baseline", SA + "ReactivePower"): (NASA_KVAR, [r.q_kvar for r in msg.intervals]),
    }
    for key, (unit, values) in expected.items():
        ts = series[key]
        assert ts["unit"] == unit
        assert ts["values"] == values and len(values) == 96
        assert ts["step"] == "PT15M"
        assert ts["start"] == START.isoformat()
        assert ts["end"] == (START + 96 * STEP).isoformat()


@pytest.mark.parametrize("fmt", sorted(RDF_FORMATS))
def test_day_forecast_unsigned(library: LibraryPeer, fmt: str) -> None:
    msg = day_forecast()
    body = serialize(to_v11(to_tree(msg)), RDF_FORMATS[fmt])
    answer = library.parse("notification", body, RDF_FORMATS[fmt].value, format=fmt)
    check_day_forecast(answer, msg)


def test_day_forecast_signed_verifies_in_the_library(library: LibraryPeer, keys: Keys) -> None:
    codec = SmartApiCodec(sealer=OutboundSecurity(keys.identity, trust=keys.trust))
    msg = day_forecast()
    body, ctype = codec.encode_v11(msg)
    assert ctype.startswith("multipart/related")
    answer = library.parse("notification", body, ctype, verify_key=str(keys.gateway_pub))
    (check,) = answer["checks"]
    assert check["hash_ok"] and check["signature_ok"]
    check_day_forecast(answer, msg)
    # another key does not verify it
    other = library.parse("notification", body, ctype, verify_key=str(keys.peer_pub))
    assert other["checks"][0]["signature_ok"] is False


def test_forecast_encrypted_for_the_peer(library: LibraryPeer, keys: Keys) -> None:
    sealer = OutboundSecurity(keys.identity, trust=keys.trust)
    msg = day_forecast()
    body, ctype = sealer.seal_v11(to_v11(to_tree(msg)), PEER, encrypt=True)
    assert b"Kilowatt" not in body
    answer = library.parse(
        "notification",
        body,
        ctype,
        verify_key=str(keys.gateway_pub),
        decrypt_key=str(keys.peer_key),
    )
    assert answer["checks"][0]["hash_ok"] and answer["checks"][0]["signature_ok"]
    check_day_forecast(answer, msg)


def test_verification_as_the_ams_reads_it(library: LibraryPeer, keys: Keys) -> None:
    msg = examples.reserve_verification()
    codec = SmartApiCodec(sealer=OutboundSecurity(keys.identity, trust=keys.trust))
    body, ctype = codec.encode_v11(msg)
    answer = library.parse("notification", body, ctype, verify_key=str(keys.gateway_pub))
    assert answer["checks"][0]["signature_ok"]
    assert answer["id"] == integer_id(msg.id)
    (activity,) = answer["activities"]
    series = series_by_name(activity)
    rows = msg.intervals
    expected = {
        ("SetPoint", SA + "ActivePower"): [r.p_set_kw for r in rows],
        ("Baseline", SA + "ActivePower"): [r.p_baseline_kw for r in rows],
        ("Measured", SA + "ActivePower"): [r.p_measured_kw for r in rows],
        ("Delivered", SA + "ActivePower"): [r.p_delivered_kw for r in rows],
        ("SetPoint", SA + "ReactivePower"): [r.q_set_kvar for r in rows],
    }
    for key, values in expected.items():
        ts = series[key]
        assert ts["values"] == values
        assert ts["unit"] == (NASA_KW if key[1].endswith("ActivePower") else NASA_KVAR)
        assert ts["start"] == msg.start.isoformat()
    named = {ts["name"]: ts for ts in activity["series"]}
    for of, values in (
        ("ActivePower", [r.p_percent for r in rows]),
        ("ReactivePower", [r.q_percent for r in rows]),
    ):
        ts = named[f"DeliveredPercent {of}"]
        assert ts["values"] == values
        assert ts["unit"] == "http://data.nasa.gov/qudt/owl/unit#Percent"


def test_integer_ids() -> None:
    assert integer_id("4711") == 4711
    uuid_id = "3f1c2a8e-5d4b-4c7a-9e0f-1a2b3c4d5e6f"
    assert integer_id(uuid_id) == int(uuid_id.replace("-", ""), 16)  # reversible
    assert 0 <= integer_id("5b0f6c3e-forecast-0001") < 2**63
    assert integer_id("a") != integer_id("b")
