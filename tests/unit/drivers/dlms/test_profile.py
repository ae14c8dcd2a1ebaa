"""Load profile entries and the interval energies verification settles on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drivers.dlms.profile import LoadProfile, ProfileColumn, ProfileEntry, merge_entries

T0 = datetime(2026, 6, 1, tzinfo=UTC)
COLUMNS = (
    ProfileColumn("pcc.clock", "8/0.0.1.0.0.255/2", "SEC"),
    ProfileColumn("pcc.e_import", "3/1.0.1.8.0.255/2", "KiloW-HR"),
    ProfileColumn("3/1.0.2.8.0.255/2", "3/1.0.2.8.0.255/2", "W-HR"),
    ProfileColumn("pcc.status", "1/0.0.96.5.0.255/2", "UNITLESS"),
)


def entry(minutes: int, imported: float | None, exported: float) -> ProfileEntry:
    t = T0 + timedelta(minutes=minutes)
    return ProfileEntry(t, (t.timestamp(), imported, exported, 0))


def profile(*entries: ProfileEntry) -> LoadProfile:
    return LoadProfile("pcc-meter", 900, COLUMNS, entries)


def test_energy_columns() -> None:
    assert [c.is_energy for c in COLUMNS] == [False, True, True, False]


def test_intervals_are_differences_of_consecutive_entries() -> None:
    p = profile(entry(0, 10.0, 0), entry(15, 12.5, 100), entry(30, 12.5, 400))
    intervals = p.intervals()
    assert [(i.start, i.end) for i in intervals] == [
        (T0, T0 + timedelta(minutes=15)),
        (T0 + timedelta(minutes=15), T0 + timedelta(minutes=30)),
    ]
    assert intervals[0].energy == {"pcc.e_import": 2.5, "3/1.0.2.8.0.255/2": 100.0}
    assert intervals[1].energy == {"pcc.e_import": 0.0, "3/1.0.2.8.0.255/2": 300.0}


def test_a_gap_spans_the_missing_intervals() -> None:
    intervals = profile(entry(0, 1.0, 0), entry(45, 4.0, 0)).intervals()
    assert intervals[0].end - intervals[0].start == timedelta(minutes=45)
    assert intervals[0].energy["pcc.e_import"] == pytest.approx(3.0)


def test_a_counter_reset_or_missing_value_gives_no_energy() -> None:
    intervals = profile(entry(0, 9.0, 5), entry(15, 1.0, 6), entry(30, None, 7)).intervals()
    assert "pcc.e_import" not in intervals[0].energy
    assert "pcc.e_import" not in intervals[1].energy
    assert intervals[1].energy["3/1.0.2.8.0.255/2"] == 1.0


def test_lookup_by_point_or_address() -> None:
    p = profile(entry(0, 1.0, 2), entry(15, 3.0, 4))
    assert p.values("pcc.e_import") == [(T0, 1.0), (T0 + timedelta(minutes=15), 3.0)]
    assert p.column("3/1.0.1.8.0.255/2") == 1
    with pytest.raises(KeyError, match=r"no column 'pcc\.q'"):
        p.column("pcc.q")


def test_windows_merge_without_duplicates_in_time_order() -> None:
    a = [entry(0, 1, 0), entry(15, 2, 0)]
    b = [entry(15, 2, 0), entry(30, 3, 0)]
    merged = merge_entries([b, a])
    assert [e.time for e in merged] == [T0 + timedelta(minutes=m) for m in (0, 15, 30)]
    assert merge_entries([]) == ()
