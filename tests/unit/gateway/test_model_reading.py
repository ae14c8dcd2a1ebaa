"""`good_reading` builds the very reading the dataclass builds, just faster."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.model import GOOD, Reading, good_reading, utcnow


def test_good_reading_equals_the_dataclass_one_and_stays_frozen() -> None:
    now = utcnow()
    fast = good_reading("pv1.p", 12.5, "KiloW", now)
    assert type(fast) is Reading
    assert fast == Reading("pv1.p", 12.5, "KiloW", gateway_time=now)
    assert (fast.quality, fast.source_time, fast.detail) == (GOOD, None, "")
    assert hash(fast) == hash(Reading("pv1.p", 12.5, "KiloW", gateway_time=now))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.value = 1.0  # type: ignore[misc]
    assert dataclasses.replace(fast, value=3).value == 3
