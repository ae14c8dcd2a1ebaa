"""Read plan: coalescing, gap and size limits, the naive plan, splitting."""

from __future__ import annotations

import pytest

from drivers.modbus.plan import ReadRequest, plan_reads, split
from drivers.modbus.protocol import ModbusAddress, ModbusOptions, ModbusPointFields, parse
from gateway.protocols.base import PointTyping


def pt(
    text: str, data_type: str | None = "uint16", bit: int | None = None
) -> tuple[str, ModbusAddress]:
    typing = PointTyping(type=data_type if "coil" not in text and "discrete" not in text else None)
    if bit is not None:
        typing = PointTyping(type=data_type, own=ModbusPointFields(bit=bit))
    return (f"p{text}", parse(text, typing))


def spans(requests: list[ReadRequest]) -> list[tuple[int, str, int, int]]:
    return [(r.unit, r.table.value, r.address, r.count) for r in requests]


def opts(**kw: object) -> ModbusOptions:
    return ModbusOptions.model_validate(kw)


def test_contiguous_points_make_one_request() -> None:
    points = [pt("1/holding/10"), pt("1/holding/11", "float32"), pt("1/holding/13", "float64")]
    plan = plan_reads(points, opts())
    assert spans(plan) == [(1, "holding", 10, 7)]
    assert [pid for pid, _ in plan[0].points] == [p[0] for p in points]
    assert [plan[0].offset(a) for _, a in plan[0].points] == [0, 1, 3]


def test_input_order_does_not_matter() -> None:
    points = [pt("1/holding/13"), pt("1/holding/10"), pt("1/holding/11")]
    assert spans(plan_reads(points, opts())) == [(1, "holding", 10, 4)]


@pytest.mark.parametrize(("gap", "requests"), [(0, 1), (3, 1), (4, 2), (20, 2)])
def test_gap_bounded_by_max_gap(gap: int, requests: int) -> None:
    points = [pt("1/holding/100"), pt(f"1/holding/{101 + gap}")]
    assert len(plan_reads(points, opts(max_gap=3))) == requests


def test_max_gap_zero_coalesces_only_adjacent() -> None:
    points = [pt("1/input/0"), pt("1/input/1"), pt("1/input/3")]
    assert spans(plan_reads(points, opts(max_gap=0))) == [(1, "input", 0, 2), (1, "input", 3, 1)]


def test_125_registers_fit_one_request() -> None:
    points = [pt(f"1/holding/{a}") for a in range(125)]
    assert spans(plan_reads(points, opts())) == [(1, "holding", 0, 125)]


def test_126th_register_starts_a_new_request() -> None:
    points = [pt(f"1/holding/{a}") for a in range(126)]
    assert spans(plan_reads(points, opts())) == [(1, "holding", 0, 125), (1, "holding", 125, 1)]


def test_multi_register_point_crossing_the_limit_moves_whole() -> None:
    wide = opts(max_gap=100)
    points = [pt("1/holding/0"), pt("1/holding/30"), pt("1/holding/123", "float32")]  # ends 125
    assert spans(plan_reads(points, wide)) == [(1, "holding", 0, 125)]
    points = [pt("1/holding/0"), pt("1/holding/30"), pt("1/holding/124", "float32")]  # ends 126
    assert spans(plan_reads(points, wide)) == [(1, "holding", 0, 31), (1, "holding", 124, 2)]


def test_gap_counts_toward_the_limit() -> None:
    points = [pt("1/holding/0"), pt("1/holding/9")]
    assert len(plan_reads(points, opts(max_gap=20, max_registers=10))) == 1
    assert len(plan_reads(points, opts(max_gap=20, max_registers=9))) == 2


def test_bits_use_max_bits() -> None:
    points = [pt(f"1/coil/{a}") for a in range(0, 30)]
    assert spans(plan_reads(points, opts(max_bits=16))) == [(1, "coil", 0, 16), (1, "coil", 16, 14)]


def test_two_thousand_bits_in_one_request() -> None:
    points = [pt(f"1/discrete/{a}") for a in range(2001)]
    assert spans(plan_reads(points, opts())) == [(1, "discrete", 0, 2000), (1, "discrete", 2000, 1)]


def test_units_and_tables_never_mix() -> None:
    points = [
        pt("1/holding/0"),
        pt("1/input/1"),
        pt("2/holding/1"),
        pt("1/holding/1"),
        pt("1/coil/0"),
    ]
    assert spans(plan_reads(points, opts())) == [
        (1, "coil", 0, 1),
        (1, "holding", 0, 2),
        (1, "input", 1, 1),
        (2, "holding", 1, 1),
    ]


def test_bit_fields_share_their_register() -> None:
    points = [pt("1/holding/5", "bool", bit=0), pt("1/holding/5", "bool", bit=7)]
    plan = plan_reads(points, opts())
    assert spans(plan) == [(1, "holding", 5, 1)]
    assert len(plan[0].points) == 2


def test_naive_plan_is_one_request_per_point() -> None:
    points = [pt(f"1/holding/{a}") for a in range(10)] + [pt("1/holding/5", "bool", bit=1)]
    plan = plan_reads(points, opts(coalesce=False))
    assert len(plan) == 11
    assert all(len(r.points) == 1 for r in plan)
    assert all(r.count == r.points[0][1].count for r in plan)


def test_oversized_point_still_gets_its_own_request() -> None:
    points = [pt("1/holding/0", "float64"), pt("1/holding/4")]
    assert spans(plan_reads(points, opts(max_registers=2))) == [
        (1, "holding", 0, 4),
        (1, "holding", 4, 1),
    ]


def test_empty_plan() -> None:
    assert plan_reads([], opts()) == []


def test_split_halves_the_points() -> None:
    points = [pt("1/holding/0"), pt("1/holding/3", "float32"), pt("1/holding/6"), pt("1/holding/9")]
    (request,) = plan_reads(points, opts())
    first, second = split(request)
    assert spans([first, second]) == [(1, "holding", 0, 5), (1, "holding", 6, 4)]
    assert first.points + second.points == request.points
    single, other = split(first)
    assert spans([single, other]) == [(1, "holding", 0, 1), (1, "holding", 3, 2)]
    assert split(single) == [single]
