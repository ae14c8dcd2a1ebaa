from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.flex.intervals import Horizon, floor_time

Q = timedelta(minutes=15)


def test_floor_and_covering_align_to_the_grid() -> None:
    t = datetime(2024, 6, 3, 16, 44, 59, tzinfo=UTC)
    assert floor_time(t, Q) == datetime(2024, 6, 3, 16, 30, tzinfo=UTC)
    h = Horizon.covering(t, Q, timedelta(hours=24))
    assert h.start == datetime(2024, 6, 3, 16, 30, tzinfo=UTC)
    assert h.count == 96
    assert h.index(t) == 0
    assert h.index(h.end) is None
    assert h.index(h.start - timedelta(seconds=1)) is None
    assert h.index(h.start_of(95)) == 95
    assert h.label(1) == "16:45-17:00"
    assert h.step_h == 0.25


def test_naive_times_and_empty_horizons_are_refused() -> None:
    with pytest.raises(ValueError, match="UTC"):
        floor_time(datetime(2024, 1, 1), Q)
    with pytest.raises(ValueError, match="timezone"):
        Horizon(datetime(2024, 1, 1), Q, 4)
    with pytest.raises(ValueError, match="at least one"):
        Horizon(datetime(2024, 1, 1, tzinfo=UTC), Q, 0)
    with pytest.raises(ValueError, match="positive"):
        Horizon(datetime(2024, 1, 1, tzinfo=UTC), timedelta(0), 1)
