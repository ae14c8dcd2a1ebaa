"""The IEC 61850 codec: read plans, quality and time, readings and command results."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from drivers.iec61850 import codec
from drivers.iec61850.protocol import DataSetOptions, Iec61850Address, parse
from gateway.mapping import Point
from gateway.model import Command, CommandStatus, QualityFlag, Validity
from gateway.protocols.base import PointTyping

GOOD_Q = {"$bits": [False] * 13}


def bits(*set_bits: int) -> dict[str, list[bool]]:
    return {"$bits": [i in set_bits for i in range(13)]}


def point(pid: str, address: str, **kw: Any) -> tuple[Point, Iec61850Address]:
    pt = Point.model_validate({"id": pid, "address": address, "unit": "KiloW", **kw})
    return pt, parse(address, PointTyping(type=pt.type))


def mv(value: float, q: dict[str, Any] | None = None, t_ms: int = 1_700_000_000_123) -> Any:
    return {"mag": {"f": value}, "q": q or GOOD_Q, "t": {"$utc_ms": t_ms, "$tq": 10}}


DATA_SET = DataSetOptions(
    reference="LD0/LLN0.Meas", members=["LD0/MMXU1.TotW@MX", "LD0/MMXU1.PhV@MX"]
)


@pytest.mark.parametrize(
    ("set_bits", "validity", "flags", "detail"),
    [
        ((), Validity.GOOD, set(), ""),
        ((1, 7), Validity.INVALID, {QualityFlag.OLD}, ""),
        ((0, 1, 10, 11), Validity.QUESTIONABLE, {QualityFlag.SUBSTITUTED}, "test"),
        (
            (1, 2, 6, 12, 4),
            Validity.INVALID,
            {QualityFlag.OVERFLOW, QualityFlag.FAILURE, QualityFlag.BLOCKED},
            "badReference",
        ),
        ((0,), Validity.QUESTIONABLE, set(), ""),  # the reserved validity code
    ],
)
def test_quality_bits(
    set_bits: tuple[int, ...], validity: Validity, flags: set[QualityFlag], detail: str
) -> None:
    quality, text = codec.quality(bits(*set_bits)["$bits"])
    assert quality.validity is validity
    assert quality.flags == flags
    assert text == detail


def test_source_time() -> None:
    assert codec.source_time({"$utc_ms": 1_700_000_000_123, "$tq": 10}) == datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )
    assert codec.source_time({"$utc_ms": 0, "$tq": 0}) is None
    assert codec.source_time(None) is None


def test_plan_groups_data_set_members_and_data_objects() -> None:
    points = [
        point("p", "LD0/MMXU1.TotW.mag.f@MX"),
        point("va", "LD0/MMXU1.PhV.phsA.cVal.mag.f@MX"),  # sub-object of a member
        point("q", "LD0/MMXU1.TotVAr.mag.f@MX"),
        point("q_inst", "LD0/MMXU1.TotVAr.instMag.f@MX"),  # same DO: same request
        point("p_set", "LD0/DRCC1.WSpt@CO", type="float32", direction="read-write"),
        point("w_sp", "LD0/MMXU1.TotW.mag.f@SP"),  # a member's DO, but not its FC
    ]
    plan = codec.plan_reads([a for _, a in points], [DATA_SET])
    assert plan.units == (
        codec.Unit("data_set", "LD0/LLN0.Meas"),
        codec.Unit("object", "LD0/MMXU1.TotVAr", "MX"),
        codec.Unit("object", "LD0/DRCC1.WSpt", "MX"),
        codec.Unit("object", "LD0/MMXU1.TotW", "SP"),
    )
    assert plan.slots == (
        codec.Slot(0, "LD0/MMXU1.TotW[MX]", (), ("mag", "f")),
        codec.Slot(0, "LD0/MMXU1.PhV[MX]", ("phsA",), ("cVal", "mag", "f")),
        codec.Slot(1, "", (), ("mag", "f")),
        codec.Slot(1, "", (), ("instMag", "f")),
        codec.Slot(2, "", (), ("mxVal", "f")),
        codec.Slot(3, "", (), ("mag", "f")),
    )


def test_readings_follow_the_ied_directory_and_isolate_failures() -> None:
    points = [
        point("p", "LD0/MMXU1.TotW.mag.f@MX", scale=0.001),
        point("va", "LD0/MMXU1.PhV.phsA.cVal.mag.f@MX"),
        point("q", "LD0/MMXU1.TotVAr.mag.f@MX"),
        point("p_set", "LD0/DRCC1.WSpt@CO", type="float32", direction="read-write"),
    ]
    plan = codec.plan_reads([a for _, a in points], [DATA_SET])
    wye = {"phsA": {"cVal": {"mag": {"f": 231.5}}, "q": bits(1, 7), "t": {"$utc_ms": 5}}}
    results = [
        {  # the IED lists its members in another order than the mapping
            "members": ["LD0/MMXU1.PhV[MX]", "LD0/MMXU1.TotW[MX]"],
            "values": [wye, mv(12500.0)],
        },
        {"error": {"code": 22, "message": "read LD0/MMXU1.TotVAr@MX: object-does-not-exist"}},
        {"value": {"mxVal": {"f": 20.0}, "q": GOOD_Q, "t": {"$utc_ms": 1000}}},
    ]
    p, va, q, p_set = codec.readings(
        [pt for pt, _ in points], [a for _, a in points], plan, results
    )
    assert (p.value, p.quality.good, p.source_time) == (
        pytest.approx(12.5),
        True,
        datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
    )
    assert va.value == 231.5
    assert va.quality.validity is Validity.INVALID and va.quality.flags == {QualityFlag.OLD}
    assert q.value is None and not q.quality.good and "object-does-not-exist" in q.detail
    assert p_set.value == 20.0 and p_set.quality.good


def test_missing_member_and_attribute_are_invalid_readings() -> None:
    points = [
        point("p", "LD0/MMXU1.TotW.mag.f@MX"),
        point("va", "LD0/MMXU1.PhV.phsA.cVal.mag.f@MX"),
    ]
    plan = codec.plan_reads([a for _, a in points], [DATA_SET])
    results = [{"members": ["LD0/MMXU1.TotW[MX]"], "values": [{"q": GOOD_Q}]}]
    p, va = codec.readings([pt for pt, _ in points], [a for _, a in points], plan, results)
    assert p.value is None and "no 'mag.f'" in p.detail
    assert va.value is None and "not a member of LD0/LLN0.Meas on the IED" in va.detail


@pytest.mark.parametrize(
    ("raw", "value", "validity", "detail"),
    [
        ({"$bits": [True, False]}, True, Validity.GOOD, "on"),
        ({"$bits": [False, True]}, False, Validity.GOOD, "off"),
        ({"$bits": [False, False]}, None, Validity.QUESTIONABLE, "intermediate-state"),
        ({"$bits": [True, True]}, None, Validity.INVALID, "bad-state"),
        ({"$error": 10}, None, Validity.INVALID, "data access error 10"),
    ],
)
def test_double_point_status(raw: Any, value: bool | None, validity: Validity, detail: str) -> None:
    pt, address = point("pos", "LD0/XCBR1.Pos.stVal@ST", type="dbpos")
    slot = codec.Slot(0, "", (), ("stVal",))
    reading = codec.reading(pt, address, {"stVal": raw, "q": GOOD_Q}, slot)
    assert (reading.value, reading.quality.validity) == (value, validity)
    assert detail in reading.detail


def test_non_finite_and_mistyped_values_are_invalid() -> None:
    pt, address = point("p", "LD0/MMXU1.TotW.mag.f@MX")
    slot = codec.Slot(0, "", (), ("mag", "f"))
    nan = codec.reading(pt, address, mv(float("nan")), slot)
    assert nan.value is None and nan.quality.validity is Validity.INVALID
    text = codec.reading(pt, address, {"mag": {"f": "12"}, "q": GOOD_Q}, slot)
    assert text.value is None and "expected a number" in text.detail


COMMAND = Command("p_set", 20.0)


@pytest.mark.parametrize(
    ("answer", "status", "needle"),
    [
        (
            {"result": {"ok": True, "stage": "termination"}},
            CommandStatus.CONFIRMED,
            "CommandTermination+",
        ),
        ({"result": {"ok": True, "stage": "operate"}}, CommandStatus.CONFIRMED, "operated"),
        (
            {"result": {"ok": False, "stage": "select", "add_cause": 26, "error": 0}},
            CommandStatus.REJECTED,
            "select refused: AddCause 26 Inconsistent-parameters",
        ),
        (
            {"result": {"ok": False, "stage": "termination", "add_cause": 9, "error": 0}},
            CommandStatus.REJECTED,
            "CommandTermination-: AddCause 9 Blocked-by-process",
        ),
        (
            {"result": {"ok": False, "stage": "operate", "add_cause": 18, "error": 1}},
            CommandStatus.REJECTED,
            "Object-not-selected (LastApplError error 1)",
        ),
        (
            {"result": {"ok": False, "stage": "termination", "timeout": True}},
            CommandStatus.TIMEOUT,
            "no CommandTermination within 2 s",
        ),
        (
            {"result": {"ok": False, "stage": "model", "detail": "is direct on the IED"}},
            CommandStatus.REJECTED,
            "is direct on the IED",
        ),
        (
            {"error": {"code": 22, "message": "no such object"}},
            CommandStatus.REJECTED,
            "no such object",
        ),
        (
            {"error": {"link": True, "message": "connection lost"}},
            CommandStatus.LINK_DOWN,
            "connection lost",
        ),
    ],
)
def test_control_results(answer: dict[str, Any], status: CommandStatus, needle: str) -> None:
    result = codec.control_result(COMMAND, answer, 2.0)
    assert result.status is status
    assert needle in result.detail


def test_write_results() -> None:
    assert codec.write_result(COMMAND, {"ok": True}).ok
    refused = codec.write_result(COMMAND, {"error": {"code": 21, "message": "access denied"}})
    assert (refused.status, refused.detail) == (CommandStatus.REJECTED, "access denied")
