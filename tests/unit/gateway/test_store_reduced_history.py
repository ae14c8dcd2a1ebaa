"""Storing by exception costs the flexibility functions nothing they can see: on the
simulated microgrid (fwsim physics with clouds on the PV and noise on the load, a reading
every minute for 8 days), the baseline forecast and the reserve verification computed from
a store that keeps readings by exception stay within 0.5 % of those computed from a store
that keeps every reading, while it keeps far fewer rows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gateway.flex import baseline
from gateway.flex.baseline import pairs
from gateway.flex.intervals import Horizon
from gateway.flex.verify import Baseline, Measurements, Setpoint, verify
from gateway.loader import load_config
from gateway.mapping import Device, Quantity, Storage
from gateway.store import Store
from tests.support.flexsim import FLEX_CONFIG, Bench, Weather

T0 = datetime(2024, 6, 1, tzinfo=UTC)
Q = timedelta(minutes=15)
STEP_S = 60.0
DAYS = 8
ENERGY = {
    Quantity.ENERGY_IMPORT,
    Quantity.ENERGY_EXPORT,
    Quantity.REACTIVE_ENERGY_IMPORT,
    Quantity.REACTIVE_ENERGY_EXPORT,
}


def _by_exception(devices: list[Device]) -> list[Device]:
    """The devices as read every STEP_S, with the storage an integrator would set: power to
    the meter's resolution (0.05 kW on 60-100 kW), energy counters to 0.01 kWh, a
    15-minute integrity period."""
    out = []
    for device in devices:
        points = [
            p.model_copy(
                update={
                    "storage": Storage(
                        deadband=0.01 if p.quantity in ENERGY else 0.05, integrity_s=900
                    )
                }
            )
            for p in device.points
        ]
        out.append(device.model_copy(update={"points": points, "poll_interval": STEP_S}))
    return out


def _rows(store: Store) -> int:
    conn = sqlite3.connect(store.path)
    try:
        return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def bench() -> Bench:
    bench = Bench(T0, config=load_config(FLEX_CONFIG), weather=Weather(seed=11), sample_s=STEP_S)
    return bench


async def test_forecast_and_verification_from_the_reduced_history(
    tmp_path: Path, bench: Bench
) -> None:
    full = await Store.open(tmp_path / "full.sqlite")  # told nothing: keeps every reading
    reduced = await Store.open(tmp_path / "reduced.sqlite")
    reduced.configure(_by_exception(bench.config.devices))
    bench.table.listen(full.add_all)
    bench.table.listen(reduced.add_all)
    for _ in range(DAYS * 24):
        bench.advance(3600, step=STEP_S)
        await full.flush()
        await reduced.flush()
    now = bench.now()
    assert now == T0 + timedelta(days=DAYS)
    kept = _rows(reduced) / _rows(full)
    assert kept < 0.75, f"kept {kept:.2f} of the rows"

    # the day-ahead forecast of each forecast input, from the 7 days before `now`
    horizon = Horizon(now, Q, 96)
    for point in ("pv1.p", "load1.p", "pcc.p"):
        forecasts = []
        for store in (full, reduced):
            history = pairs(await store.range(point, now - timedelta(days=7), now))
            forecasts.append(baseline.forecast(history, horizon, now))
        want, got = forecasts
        scale = float(np.max(np.abs(want)))
        assert scale > 1.0
        worst = float(np.max(np.abs(got - want))) / scale
        assert worst <= 0.005, f"{point}: forecast off by {worst:.2%} of its peak"

    # the verification of an activation over two hours around noon of the last day
    start = T0 + timedelta(days=DAYS - 1, hours=11)
    end = start + timedelta(hours=2)
    grid = Horizon(start, Q, 8)
    base = Baseline(grid, tuple([40.0] * 8))
    setpoints = [Setpoint(start, 20.0)]
    margin = timedelta(minutes=1)
    results = []
    for store in (full, reduced):

        async def series(point: str, store: Store = store) -> list[tuple[datetime, float]]:
            return pairs(await store.range(point, start - margin, end + margin))

        power_only = Measurements(p=await series("pcc.p"), q=await series("pcc.q"))
        counters = Measurements(
            p=power_only.p,
            q=power_only.q,
            e_import=await series("pcc.e_import"),
            e_export=await series("pcc.e_export"),
        )
        results.append(
            [
                verify("a1", None, base, start, end, end, setpoints, meas, final=True)
                for meas in (power_only, counters)
            ]
        )
    for want, got in zip(results[0], results[1], strict=True):
        assert len(want.intervals) == len(got.intervals) == 8
        for w, g in zip(want.intervals, got.intervals, strict=True):
            assert w.source == g.source
            assert g.measured_p_kw == pytest.approx(w.measured_p_kw, rel=0.005, abs=0.05)
            assert g.delivered_kw == pytest.approx(w.delivered_kw, rel=0.005, abs=0.05)
    await full.close()
    await reduced.close()
