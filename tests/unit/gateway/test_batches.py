"""Batches: a poll's block of points as one object through the point table and the store,
deciding and showing exactly what the same values as readings, one by one, do."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.model import Acquired, Batch, PointSet, Quality, QualityFlag, Reading
from gateway.points import PointTable
from gateway.store import Store
from tests.unit.gateway.test_points import demo_with_units
from tests.unit.gateway.test_store import T0, _all_rows, _at, _device

BAD = Quality.invalid(QualityFlag.COMM_FAILURE)
IDS = ("a", "b", "c", "d", "e", "f")


def _polls(seed: int) -> list[Batch]:
    """60 polls of six points: random walks across the deadband, flat ones, ints and
    bools, steps, a link failure (an invalid batch), device-stamped records."""
    rnd = random.Random(seed)
    points = PointSet(IDS, ("KiloW",) * len(IDS))
    walk = [10.0, 20.0]
    out = []
    for i in range(60):
        t = _at(i)
        if 20 <= i < 23:
            out.append(Batch(points, [None] * len(IDS), t, BAD, detail="link down"))
            continue
        walk = [w + rnd.uniform(-0.6, 0.6) for w in walk]
        values = [*walk, 5.0, 3 + i // 25, i % 7 == 0, float(i // 10)]
        out.append(Batch(points, values, t))
        if i % 9 == 0:
            out.append(Batch(PointSet(("a",), ("KiloW",)), [float(i)], t, source_time=_at(i - 30)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_batch_keeps_what_its_readings_one_by_one_keep(tmp_path: Path, seed: int) -> None:
    """Deadband, integrity period, quality changes and records decide the same, and the
    same rows are written, for a block handed over as one batch as for its readings."""
    device = _device(deadband=0.5, integrity_s=15)
    p = device.points[0]
    device.points = [p.model_copy(update={"id": point}) for point in IDS]
    one_by_one = await Store.open(tmp_path / "one.sqlite")
    batched = await Store.open(tmp_path / "batch.sqlite")
    for store in (one_by_one, batched):
        store.configure([device])
    polls = _polls(seed)
    for batch in polls:
        for reading in batch.readings():
            one_by_one.add(reading)
    # a poll's batches in one update, as the point table hands them
    batched.add_all(polls[:30])
    for batch in polls[30:]:
        batched.add_all([batch])
    assert batched.kept == one_by_one.kept and batched.pending == one_by_one.pending
    for store in (one_by_one, batched):
        await store.close()
    want = sorted(_all_rows(tmp_path / "one.sqlite"))
    assert sorted(_all_rows(tmp_path / "batch.sqlite")) == want

    def seconds(point: str) -> list[float]:
        return [row[1] - T0.timestamp() for row in want if row[0] == point and row[4] is None]

    # a flat point at its integrity period, the quality changes and the stop's confirmation;
    # a stepping one at its steps too; the walks now and then
    assert seconds("c") == [0, 15, 20, 23, 38, 53, 59]
    assert seconds("f") == [0, 10, 20, 23, 30, 40, 50, 59]
    assert 8 < len(seconds("a")) < 60
    assert sum(row[0] == "a" and row[4] is not None for row in want) == 7


def test_a_block_in_canonical_units_passes_the_table_as_it_came() -> None:
    """A block of mapped points already in their canonical units costs the table no
    per-point work: the listener gets the very batch; readings are built on request."""
    table = PointTable(demo_with_units({}))
    heard: list[Sequence[Acquired]] = []
    table.listen(heard.append)
    points = PointSet(("bess1.p", "bess1.soc"), ("KiloW", "PERCENT"))
    batch = Batch(points, [-3.5, 55.0], T0)
    table.update([batch])
    assert heard == [[batch]] and heard[0][0] is batch
    assert table.latest("bess1.soc") == Reading("bess1.soc", 55.0, "PERCENT", gateway_time=T0)
    assert table.quality("bess1.p") == Quality()
    assert table.quality("pcc.p") is None and table.latest("pcc.p") is None
    assert table.snapshot() == {r.point: r for r in batch.readings()}


def test_a_block_is_converted_and_cut_to_the_mapped_points_once_per_point_set() -> None:
    table = PointTable(demo_with_units({"bess1.p": "W"}))
    heard: list[Acquired] = []
    table.listen(lambda batches: heard.extend(batches))
    points = PointSet(("bess1.p", "nobody.knows", "bess1.soc"), ("W", "KiloW", "PERCENT"))
    for k in range(2):
        table.update([Batch(points, [-2500.0 * (k + 1), 1.0, 55.0], _at(k))])
    first, second = heard
    assert first.points.ids == ("bess1.p", "bess1.soc")
    assert first.points.units == ("KiloW", "PERCENT")
    assert list(second.values) == [-5.0, 55.0]
    assert second.points is first.points  # worked out once for the driver's set
    assert table.latest("bess1.p") == Reading("bess1.p", -5.0, "KiloW", gateway_time=_at(1))
    assert "nobody.knows" not in table.snapshot()
    # a reading of the same point is the batch of one, on the same way in
    table.update([Reading("bess1.p", 1000.0, "W", BAD, gateway_time=_at(2), detail="x")])
    assert heard[-1].readings() == [Reading("bess1.p", 1.0, "KiloW", BAD, None, _at(2), "x")]
    table.update([Batch(PointSet(("nobody.knows",), ("KiloW",)), [1.0], _at(3))])
    assert len(heard) == 3  # nothing mapped: no call


def test_a_batch_must_carry_a_value_for_each_point() -> None:
    points = PointSet(("a", "b"), ("KiloW", "KiloW"))
    with pytest.raises(ValueError, match="batch of 2 points carries 1 values"):
        Batch(points, [1.0], T0)
    with pytest.raises(ValueError, match="2 point ids with 1 units"):
        PointSet(("a", "b"), ("KiloW",))


def test_the_status_counts_the_readable_points_and_the_good_ones() -> None:
    table = PointTable(demo_with_units({}))
    readable = sum(m.point.direction.readable for m in table)
    assert 0 < readable < sum(1 for _ in table)  # the demo maps write-only set points too
    assert table.readable_good() == (readable, 0)
    points = PointSet(("bess1.p", "bess1.soc"), ("KiloW", "PERCENT"))
    table.update([Batch(points, [1.0, 50.0], T0), Reading("pcc.p", None, "KiloW", BAD)])
    assert table.readable_good() == (readable, 2)
    table.mark_device_down(table.mapped("bess1.p").device, "gone")  # type: ignore[union-attr]
    assert table.readable_good() == (readable, 0)


def test_a_reading_reads_as_the_batch_of_its_point_and_passes_the_table_as_it_came() -> None:
    reading = Reading("bess1.soc", 55.0, "PERCENT", gateway_time=T0)
    assert reading.points is Reading("bess1.soc", 1.0, "PERCENT").points  # one set per point
    assert (reading.points.ids, reading.points.units, reading.values) == (
        ("bess1.soc",),
        ("PERCENT",),
        (55.0,),
    )
    assert reading.readings() == [reading] and reading.reading("bess1.soc") is reading
    with pytest.raises(KeyError):
        reading.reading("bess1.p")
    table = PointTable(demo_with_units({}))
    heard: list[Sequence[Acquired]] = []
    table.listen(heard.append)
    table.update([reading])
    assert heard == [[reading]] and table.latest("bess1.soc") is reading
