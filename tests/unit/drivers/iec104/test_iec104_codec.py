"""IEC 104 values, quality descriptors and command answers, without a network."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import c104
import pytest

from drivers.iec104 import confirm, quality
from drivers.iec104.codec import (
    COT_INTERROGATED,
    COT_PERIODIC,
    COT_SPONTANEOUS,
    EVENT_CAUSES,
    NORMALIZED_MAX,
    Sample,
    decode,
    encode,
    is_monitoring_cause,
)
from drivers.iec104.confirm import ACT_CON, ACT_TERM, Confirmation, Verdict
from drivers.iec104.driver import Iec104Driver
from gateway.errors import RawRangeError
from gateway.mapping import Device, Point
from gateway.model import QualityFlag, Reading, Validity
from gateway.protocols.iec104 import TypeId
from gateway.protocols.iec104 import parse as parse_address

F = QualityFlag


def point(**kw: object) -> Point:
    base: dict[str, object] = {"id": "p", "address": "1/1/M_ME_NC_1", "unit": "KiloW"}
    base.update(kw)
    return Point.model_validate(base)


def sample(value: float | int | bool | None, bits: int = 0, **kw: object) -> Sample:
    base: dict[str, object] = {
        "common_address": 1,
        "ioa": 1,
        "type_id": 13,
        "value": value,
        "bits": bits,
        "recorded_at": None,
        "cot": COT_SPONTANEOUS,
    }
    base.update(kw)
    return Sample(**base)  # type: ignore[arg-type]


# -- quality descriptors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "validity", "flags"),
    [
        (0x00, Validity.GOOD, set()),
        (0x80, Validity.INVALID, set()),
        (0x40, Validity.QUESTIONABLE, {F.OLD}),
        (0x20, Validity.QUESTIONABLE, {F.SUBSTITUTED}),
        (0x10, Validity.QUESTIONABLE, {F.BLOCKED}),
        (0x01, Validity.QUESTIONABLE, {F.OVERFLOW}),
        (0xF1, Validity.INVALID, {F.OLD, F.SUBSTITUTED, F.BLOCKED, F.OVERFLOW}),
        (0x08, Validity.GOOD, set()),  # EI: only meaningful for protection events
    ],
)
def test_qds(bits: int, validity: Validity, flags: set[QualityFlag]) -> None:
    q = quality.from_qds(bits)
    assert q.validity is validity and q.flags == flags


@pytest.mark.parametrize(
    ("bits", "validity", "flags"),
    [
        (0x00, Validity.GOOD, set()),
        (0x1F, Validity.GOOD, set()),  # the sequence number is no quality
        (0x20, Validity.QUESTIONABLE, {F.OVERFLOW}),
        (0x40, Validity.QUESTIONABLE, {F.INCONSISTENT}),
        (0xE0, Validity.INVALID, {F.OVERFLOW, F.INCONSISTENT}),
    ],
)
def test_bcr(bits: int, validity: Validity, flags: set[QualityFlag]) -> None:
    q = quality.from_bcr(bits)
    assert q.validity is validity and q.flags == flags


def test_qds_bits_are_c104s() -> None:
    assert c104.Quality.Invalid.value == quality.Qds.IV
    assert c104.Quality.NonTopical.value == quality.Qds.NT
    assert c104.Quality.Substituted.value == quality.Qds.SB
    assert c104.Quality.Blocked.value == quality.Qds.BL
    assert c104.Quality.Overflow.value == quality.Qds.OV


def test_types_match_the_protocol_library() -> None:
    for t in TypeId:
        assert getattr(c104.Type, t.name).value == t.value


def test_describe() -> None:
    assert quality.describe(0xC1, counter=False) == "IV NT OV"
    assert quality.describe(0x60, counter=True) == "CA CY"
    assert quality.describe(0, counter=False) == ""


# -- monitoring values --------------------------------------------------------------


def test_float_scaled_to_engineering_with_time_tag() -> None:
    at = datetime(2026, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
    r = decode(point(scale=0.5, offset=1), TypeId.M_ME_NC_1, sample(10.0, recorded_at=at))
    assert r.value == 6.0 and r.unit == "KiloW" and r.quality.good
    assert r.source_time == at and r.detail == ""


def test_normalized_and_scaled_and_counter() -> None:
    assert decode(point(scale=100), TypeId.M_ME_NA_1, sample(0.5)).value == 50.0
    assert decode(point(scale=0.1), TypeId.M_ME_TE_1, sample(2301)).value == pytest.approx(230.1)
    counter = decode(point(scale=0.001), TypeId.M_IT_NA_1, sample(12345, bits=0x40))
    assert counter.value == pytest.approx(12.345)
    assert counter.quality.flags == {F.INCONSISTENT} and "CA" in counter.detail


def test_outstation_quality_keeps_value_and_says_why() -> None:
    r = decode(point(), TypeId.M_ME_NC_1, sample(3.0, bits=0x80 | 0x40))
    assert r.value == 3.0
    assert r.quality.validity is Validity.INVALID and r.quality.flags == {F.OLD}
    assert r.detail == "outstation quality IV NT"


@pytest.mark.parametrize(
    ("state", "value", "validity"),
    [
        (2, True, Validity.GOOD),
        (1, False, Validity.GOOD),
        (0, None, Validity.QUESTIONABLE),
        (3, None, Validity.INVALID),
    ],
)
def test_double_point_states(state: int, value: bool | None, validity: Validity) -> None:
    r = decode(point(unit="UNITLESS"), TypeId.M_DP_TB_1, sample(state))
    assert r.value is value and r.quality.validity is validity


def test_single_point_is_bool_and_scale_does_not_apply() -> None:
    r = decode(point(unit="UNITLESS", scale=10), TypeId.M_SP_NA_1, sample(True))
    assert r.value is True


def test_undecodable_and_non_finite_are_invalid() -> None:
    r = decode(point(), TypeId.M_ME_NC_1, sample(None))
    assert r.value is None and r.quality.validity is Validity.INVALID
    nan = decode(point(), TypeId.M_ME_NC_1, sample(math.nan))
    assert nan.quality.validity is Validity.INVALID and F.OUT_OF_RANGE in nan.quality.flags


def test_causes() -> None:
    assert COT_SPONTANEOUS in EVENT_CAUSES and COT_PERIODIC in EVENT_CAUSES
    assert 20 in COT_INTERROGATED and 20 not in EVENT_CAUSES
    assert is_monitoring_cause(20) and is_monitoring_cause(37) and is_monitoring_cause(11)
    assert not is_monitoring_cause(7) and not is_monitoring_cause(6)


# -- command values -----------------------------------------------------------------


def test_encode_set_points() -> None:
    assert encode(point(), TypeId.C_SE_NC_1, 12.5) == 12.5
    assert encode(point(scale=0.1), TypeId.C_SE_NB_1, -5.0) == -50
    assert encode(point(scale=100), TypeId.C_SE_NA_1, 25.0) == 0.25
    assert encode(point(scale=100), TypeId.C_SE_NA_1, -100.0) == -1.0


def test_encode_binary_commands() -> None:
    assert encode(point(), TypeId.C_SC_NA_1, True) is True
    assert encode(point(), TypeId.C_DC_NA_1, 0) is False


@pytest.mark.parametrize(
    ("pt", "type_id", "value", "needle"),
    [
        (point(scale=100), TypeId.C_SE_NA_1, 100.0, "normalized"),
        (point(scale=0.1), TypeId.C_SE_NB_1, 4000.0, "-32768..32767"),
        (point(), TypeId.C_SE_NC_1, 1e39, "short float"),
        (point(), TypeId.C_SE_NC_1, True, "takes a number"),
        (point(), TypeId.C_DC_NA_1, 2, "on/off"),
    ],
)
def test_encode_refuses_what_the_type_cannot_carry(
    pt: Point, type_id: TypeId, value: float, needle: str
) -> None:
    with pytest.raises(RawRangeError, match=needle):
        encode(pt, type_id, value)
    assert NORMALIZED_MAX < 1.0


# -- command answers ----------------------------------------------------------------

# APDUs as received from the simulator (captured on loopback)
SE_NC_NEGATIVE_CON = bytes.fromhex("68 12 06 00 02 00 32 01 47 00 01 00 d1 07 00 00 00 a0 40 00")
DC_SELECT_CON = bytes.fromhex("68 0e 06 00 02 00 2e 01 07 00 01 00 d3 07 00 82")
DC_EXECUTE_CON = bytes.fromhex("68 0e 08 00 04 00 2e 01 07 00 01 00 d3 07 00 02")
DC_TERM = bytes.fromhex("68 0e 0a 00 04 00 2e 01 0a 00 01 00 d3 07 00 82")
GI_CON = bytes.fromhex("68 0e 08 00 04 00 64 01 07 00 01 00 00 00 00 14")
SPONTANEOUS_FLOAT = bytes.fromhex(
    "68 19 06 00 02 00 24 01 03 00 01 00 e9 03 00 00 00 58 41 00 87 7b 13 01 1a 0b 1a"
)


def test_parse_answers() -> None:
    assert confirm.parse(SE_NC_NEGATIVE_CON) == (
        (1, 50, 2001),
        Confirmation(ACT_CON, negative=True, select=False),
    )
    assert confirm.parse(DC_SELECT_CON) == ((1, 46, 2003), Confirmation(ACT_CON, False, True))
    assert confirm.parse(DC_EXECUTE_CON) == ((1, 46, 2003), Confirmation(ACT_CON, False, False))
    assert confirm.parse(DC_TERM) == ((1, 46, 2003), Confirmation(ACT_TERM, False, True))
    assert confirm.parse(GI_CON) == ((1, 100, 0), Confirmation(ACT_CON, False, False))


def test_parse_ignores_everything_else() -> None:
    assert confirm.parse(SPONTANEOUS_FLOAT) is None  # monitoring
    assert confirm.parse(bytes.fromhex("680407000000")) is None  # U frame
    assert confirm.parse(DC_TERM[:-1]) is None  # length does not match
    assert confirm.parse(b"") is None


def c(cot: int, negative: bool = False, select: bool = False) -> Confirmation:
    return Confirmation(cot, negative, select)


def test_judge_direct_command() -> None:
    assert confirm.judge_command([c(ACT_CON)], select=False)[0] is Verdict.CONFIRMED
    verdict, why = confirm.judge_command([c(ACT_CON, negative=True)], select=False)
    assert verdict is Verdict.REJECTED and why == "negative confirmation of the command"
    assert confirm.judge_command([], select=False) == (Verdict.NO_ANSWER, "")
    unknown = confirm.judge_command([c(47, negative=True)], select=False)
    assert unknown == (Verdict.REJECTED, "negative unknown IOA of the command")


def test_judge_select_before_execute() -> None:
    sel, exe, term = c(ACT_CON, select=True), c(ACT_CON), c(ACT_TERM, select=True)
    assert confirm.judge_command([sel, exe, term], select=True) == (Verdict.CONFIRMED, "")
    # the termination may overtake the confirmation of the execute
    assert confirm.judge_command([sel, term, exe], select=True)[0] is Verdict.CONFIRMED
    assert confirm.judge_command([sel, exe], select=True) == (
        Verdict.CONFIRMED,
        "confirmed, not terminated",
    )
    assert confirm.judge_command([sel], select=True)[0] is Verdict.SELECTED
    assert confirm.judge_command([sel, term], select=True)[0] is Verdict.SELECTED
    refused_select = confirm.judge_command([c(ACT_CON, True, True)], select=True)
    assert refused_select == (Verdict.REJECTED, "negative confirmation of the select")
    refused_exec = confirm.judge_command([sel, c(ACT_CON, negative=True), term], select=True)
    assert refused_exec == (Verdict.REJECTED, "negative confirmation of the command")


def test_judge_interrogation() -> None:
    assert confirm.judge_interrogation([c(ACT_CON), c(ACT_TERM)]) == (Verdict.CONFIRMED, "")
    assert confirm.judge_interrogation([c(ACT_CON)]) == (
        Verdict.NO_ANSWER,
        "confirmed, not terminated",
    )
    assert confirm.judge_interrogation([c(ACT_CON, negative=True)])[0] is Verdict.REJECTED


# -- routing of received objects (driver, no network) --------------------------------


def routing_driver() -> tuple[Iec104Driver, list[Reading]]:
    dev = Device.model_validate(
        {
            "id": "rtu",
            "protocol": "iec104",
            "connection": {"host": "127.0.0.1", "port": 2404},
            "points": [
                {"id": "p", "address": "1/1/M_ME_NC_1", "unit": "KiloW"},
                {"id": "s", "address": "1/2/M_DP_NA_1", "unit": "UNITLESS"},
            ],
        }
    )
    dev._addresses = {p.id: parse_address(p.address, p.typing) for p in dev.points}
    driver = Iec104Driver(dev)
    pushed: list[Reading] = []
    driver._sink = pushed.append
    return driver, pushed


def test_causes_decide_what_is_pushed() -> None:
    driver, pushed = routing_driver()
    driver._on_sample(sample(1.0, cot=20))  # interrogated: cache only
    assert pushed == [] and driver._current(driver.device.points[0], 0).value == 1.0
    driver._on_sample(sample(2.0, cot=COT_SPONTANEOUS, type_id=36))  # the time-tagged twin
    driver._on_sample(sample(3.0, cot=COT_PERIODIC))
    assert [r.value for r in pushed] == [2.0, 3.0]
    driver._on_sample(sample(9.0, test=True))
    driver._on_sample(sample(9.0, negative=True))
    driver._on_sample(sample(9.0, cot=7))  # activation confirmation: no data
    driver._on_sample(sample(9.0, ioa=99))  # not mapped
    assert [r.value for r in pushed] == [2.0, 3.0] and driver.ignored == 4


def test_foreign_type_makes_the_point_invalid_until_the_right_one_comes() -> None:
    driver, _ = routing_driver()
    s_point = driver.device.points[1]
    driver._on_sample(sample(True, ioa=2, type_id=1, cot=20))  # M_SP_NA_1, mapped M_DP_NA_1
    r = driver._current(s_point, 0)
    assert r.quality.validity is Validity.INVALID
    assert "outstation sends M_SP_NA_1 for IOA 2, mapped M_DP_NA_1" in r.detail
    driver._on_sample(sample(2, ioa=2, type_id=31, cot=COT_SPONTANEOUS))  # M_DP_TB_1
    assert driver._current(s_point, 0).value is True


def test_settled_waits_for_the_end_of_a_select_before_execute() -> None:
    sel, exe, term = c(ACT_CON, select=True), c(ACT_CON), c(ACT_TERM, select=True)
    assert not confirm.command_settled([sel, exe], select=True)
    assert confirm.command_settled([sel, exe, term], select=True)
    assert confirm.command_settled([exe], select=False)
    assert confirm.command_settled([c(ACT_CON, negative=True, select=True)], select=True)
    assert not confirm.command_settled([sel], select=True)
    assert not confirm.interrogation_settled([c(ACT_CON)])
    assert confirm.interrogation_settled([c(ACT_CON), c(ACT_TERM)])
