"""A TimeSeries write from the published 1.1 library (a PV forecast of an AMS or forecast
service) lands in the flexibility functions' baseline forecast: the forecast the gateway
publishes next changes accordingly. The series' naive times are read in the peer's zone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.config import FlexSettings
from gateway.flex.intervals import Horizon
from gateway.flex.messages import ExternalForecasts
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.smartapi.access import AccessService
from gateway.smartapi.encode import der_iri
from gateway.smartapi.peers import Profiles
from tests.interop.conftest import GATEWAY, PEER, PEER_TZ
from tests.interop.peer import LibraryPeer
from tests.support.flexsim import Bench, BenchClock, Publisher

START = datetime(2024, 6, 3, 16, 50, tzinfo=UTC)
SA = "http://smart-api.io/ontology/1.0/smartapi#"
NASA_KW = "http://data.nasa.gov/qudt/owl/unit#Kilowatt"
STEP = timedelta(minutes=5)


class Rig:
    def __init__(self, tmp: Path, profiles: Profiles) -> None:
        self.bench = Bench.warmed(START)
        self.bench.config.gateway.flex = FlexSettings(
            interval_s=300, control_cycle_s=5.0, horizon_h=6
        )
        self.forecasts = ExternalForecasts()
        self.records = FlexRecords(tmp / "flex.sqlite")
        self.flex = FlexService(
            self.bench.config,
            self.bench.table,
            self.bench.controller,
            self.records,
            Publisher(),
            self.bench.history,
            BenchClock(self.bench),
            external=self.forecasts,
        )
        self.access = AccessService(
            config=self.bench.config,
            table=self.bench.table,
            write=self.bench.controller.write,
            sender=GATEWAY,
            profiles=profiles,
            forecasts=self.forecasts,
        )

    def der(self, der: str) -> str:
        return der_iri(self.bench.config.gateway.microgrid.id, der)


@pytest.fixture
async def rig(tmp_path: Path, profiles: Profiles) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, profiles)
    await r.records.open()
    yield r
    await r.records.close()


def local(t: datetime) -> str:
    """`t` as the peer's clock shows it (naive)."""
    return t.astimezone(ZoneInfo(PEER_TZ)).replace(tzinfo=None).isoformat()


def pv_series(values: list[float], quantity: str = "ActivePower") -> dict[str, object]:
    return {
        "quantity": SA + quantity,
        "unit": NASA_KW,
        "start": local(START.replace(minute=50)),
        "step": "PT5M",
        "step_s": 300,
        "values": values,
    }


async def test_pv_forecast_write_moves_the_baseline(library: LibraryPeer, rig: Rig) -> None:
    plain = await rig.flex.forecast()
    body = library.request(
        method="write", sender=PEER, entity=rig.der("pv1"), series=pv_series([0.0] * 72), id=61
    )
    reply = await rig.access.handle(body.body, body.content_type, "ams")
    assert reply.status == 200, reply.body[:500]
    # the series is on the horizon where the peer meant it: from 16:50 UTC, 72 x 5 min
    on = rig.forecasts(Horizon(START - STEP, STEP, 74))["pv1"]
    assert on[0] is None and on[1:73] == [0.0] * 72 and on[73] is None
    clouded = await rig.flex.forecast()
    # PV produces ~14 kW now; with the forecast service expecting none, the import rises
    i = 3
    assert clouded.intervals[i].baseline_p_kw > plain.intervals[i].baseline_p_kw + 5.0
    # the answer tells the peer what was taken, in its own forms
    answer = library.parse("response", reply.body, reply.content_type)
    (activity,) = answer["activities"]
    (ts,) = activity["series"]
    assert ts["values"] == [0.0] * 72 and ts["unit"] == NASA_KW
    assert ts["start"] == START.isoformat()


NASA_KVAR = "http://data.nasa.gov/qudt/owl/unit#KilovoltAmpereReactive"


@pytest.mark.parametrize(
    ("der", "series", "status", "says"),
    [
        ("elsewhere-pv9", pv_series([1.0] * 4), 404, b"none of ours"),
        ("pv1", {**pv_series([1.0] * 4, "ReactivePower"), "unit": NASA_KVAR}, 422, b"active"),
    ],
)
async def test_a_forecast_the_gateway_cannot_use_is_refused(
    library: LibraryPeer, rig: Rig, der: str, series: dict[str, object], status: int, says: bytes
) -> None:
    entity = rig.der(der) if der == "pv1" else "urn:mgms:microgrid:elsewhere:der:pv9"
    body = library.request(method="write", sender=PEER, entity=entity, series=series, id=62)
    reply = await rig.access.handle(body.body, body.content_type, "ams")
    assert reply.status == status and says in reply.body
    assert rig.forecasts(Horizon(START, STEP, 4)) == {}  # nothing taken


async def test_forecast_write_needs_a_writer(library: LibraryPeer, rig: Rig) -> None:
    body = library.request(
        method="write", sender=PEER, entity=rig.der("pv1"), series=pv_series([0.0] * 4), id=64
    )
    reply = await rig.access.handle(body.body, body.content_type, "reader")
    assert reply.status == 403
    assert rig.forecasts(Horizon(START, STEP, 4)) == {}
