"""gateway.smartapi.xsd against the XSD 1.1 lexical grammars (XML Schema 1.1 Part 2, 3.3).

Two properties per datatype: every string built from the grammar's productions is
accepted with the value the grammar gives it; and for any string at all (from an alphabet
rich in the characters Python's conversions accept beyond XSD: underscores, non-ASCII
digits, Unicode spaces, hex prefixes), the module accepts it exactly when elementpath's
XSD 1.1 datatypes (an independent implementation) do."""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from elementpath import datatypes as ep
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.errors import LexicalFormError
from gateway.smartapi import xsd

X = xsd.XSD_NS
digits = st.text("0123456789", min_size=1, max_size=12)
sign = st.sampled_from(["", "+", "-"])

# -- strings built from the productions -----------------------------------------------------


@st.composite
def decimals(draw: st.DrawFn) -> str:
    whole, frac = draw(digits), draw(digits)
    form = draw(st.sampled_from(["w", "w.", "w.f", ".f"]))
    body = {"w": whole, "w.": whole + ".", "w.f": f"{whole}.{frac}", ".f": f".{frac}"}[form]
    return draw(sign) + body


@st.composite
def doubles(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["INF", "+INF", "-INF", "NaN"]))
    mantissa = draw(decimals())
    if draw(st.booleans()):
        mantissa += (
            draw(st.sampled_from("eE"))
            + draw(sign)
            + draw(st.text("0123456789", min_size=1, max_size=3))
        )
    return mantissa


@st.composite
def date_times(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30)))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    text = f"{moment.year:04d}" + text[text.index("-") :]
    if draw(st.booleans()):
        text += "." + draw(digits)
    zone = draw(st.sampled_from(["", "Z", "+00:00", "-05:30", "+14:00", "-13:59"]))
    return text + zone


@st.composite
def durations(draw: st.DrawFn) -> str:
    n = st.text("0123456789", min_size=1, max_size=4)
    d = draw(st.one_of(st.none(), n))
    h, m = draw(st.one_of(st.none(), n)), draw(st.one_of(st.none(), n))
    s = draw(st.one_of(st.none(), n, st.builds(lambda a, b: f"{a}.{b}", n, n)))
    if d is None and h is None and m is None and s is None:
        s = "0"
    time = "".join(f"{v}{u}" for v, u in [(h, "H"), (m, "M"), (s, "S")] if v is not None)
    return (
        draw(st.sampled_from(["", "-"]))
        + "P"
        + (f"{d}D" if d else "")
        + (f"T{time}" if time else "")
    )


@given(decimals())
def test_decimal_forms_are_read_as_the_grammar_says(text: str) -> None:
    assert xsd.number(text, X + "decimal") == float(Decimal(text))


@given(doubles())
def test_double_forms_are_read_as_the_grammar_says(text: str) -> None:
    value = xsd.number(text, X + "double")
    assert isinstance(value, float)
    if text == "NaN":
        assert math.isnan(value)
    else:
        assert value == float(text)


@given(sign, digits)
def test_integer_forms(s: str, d: str) -> None:
    assert xsd.number(s + d, X + "integer") == int(s + d)


@given(date_times())
def test_date_time_forms(text: str) -> None:
    value = xsd.date_time(text)
    assert value.strftime("%m-%dT%H:%M:%S") == text[text.index("-") + 1 : text.index("-") + 15]
    assert (value.tzinfo is None) == (text[-1] != "Z" and text[-6] not in "+-")


@given(durations())
def test_duration_forms(text: str) -> None:
    value = xsd.duration(text, X + "dayTimeDuration")
    assert value.total_seconds() == pytest.approx(
        float(ep.DayTimeDuration.fromstring(text).seconds)
    )


# -- any string: the module agrees with an independent XSD 1.1 implementation -------------

ALPHABET = "0123456789+-.eEINFaTZPYMDHS:_x \t\u0665\u06f5\uff17\u2003\u00a0tr\u0660ufls"
ORACLE = {
    "double": ep.DoubleProxy,
    "float": ep.DoubleProxy,
    "decimal": ep.DecimalProxy,
    "integer": ep.Integer,
    "boolean": ep.BooleanProxy,
    "dateTime": ep.DateTime,
    "duration": ep.Duration,
}


def oracle_accepts(name: str, text: str) -> bool:
    oracle = ORACLE[name]
    try:
        oracle.validate(text)  # type: ignore[attr-defined]
        if name in ("dateTime", "duration"):  # the value constraints (days in a month)
            oracle.fromstring(text)  # type: ignore[attr-defined]
    except (ValueError, TypeError, OverflowError):
        return False
    return True


@settings(max_examples=400)
@given(st.sampled_from(sorted(ORACLE)), st.text(ALPHABET, max_size=24))
@example("double", "1_0")
@example("double", "\u0665")
@example("decimal", "1_1")
@example("integer", " 7")
@example("double", "7\u2003")
@example("double", "infinity")
@example("boolean", "True")
@example("duration", "P")
@example("duration", "PT")
@example("duration", "P1DT")
@example("dateTime", "2026-12-07T24:00:00")
@example("dateTime", "2026-02-29T00:00:00Z")
def test_accepts_exactly_the_xsd_forms(name: str, text: str) -> None:
    assert (xsd.problem(text, X + name) is None) == oracle_accepts(name, text), text


GRAMMAR = {
    "double": doubles(),
    "decimal": decimals(),
    "integer": st.builds(str.__add__, sign, digits),
    "dateTime": date_times(),
    "duration": durations(),
}


@settings(max_examples=int(os.environ.get("XSD_EXAMPLES", 400)))
@given(st.data(), st.sampled_from(sorted(GRAMMAR)))
def test_near_misses_agree_with_the_independent_implementation(
    data: st.DataObject, name: str
) -> None:
    """A form from the grammar with one character replaced, inserted or dropped."""
    text = data.draw(GRAMMAR[name])
    at = data.draw(st.integers(0, len(text)))
    char = data.draw(st.sampled_from(ALPHABET))
    edit = data.draw(st.sampled_from(["replace", "insert", "drop"]))
    mutated = {
        "replace": text[:at] + char + text[at + 1 :],
        "insert": text[:at] + char + text[at:],
        "drop": text[:at] + text[at + 1 :],
    }[edit]
    assert (xsd.problem(mutated, X + name) is None) == oracle_accepts(name, mutated), mutated


# -- where Python and XSD part ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "datatype"),
    [
        ("1_0", "double"),
        ("\u0665", "double"),
        ("1_1", "decimal"),
        ("\uff17", "integer"),
        ("0x10", "integer"),
        (" 1", "integer"),
        ("1 ", "boolean"),
        ("True", "boolean"),
        ("infinity", "double"),
        ("2026-12-07 05:00:00Z", "dateTime"),
        ("2026-12-07T05:00:00+15:00", "dateTime"),
        ("P1Y", "dayTimeDuration"),
        ("300", "byte"),
        ("-1", "unsignedInt"),
    ],
)
def test_python_forms_xsd_does_not_have_are_refused(text: str, datatype: str) -> None:
    with pytest.raises(LexicalFormError, match=re.escape(repr(text))):
        xsd.check(text, X + datatype)


def test_values() -> None:
    assert xsd.date_time("2026-12-07T24:00:00Z") == datetime(2026, 12, 8, tzinfo=UTC)
    assert xsd.date_time("2026-12-07T05:00:00.1234567-01:30").utcoffset() == timedelta(hours=-1.5)
    assert xsd.duration("-P1DT0.5S") == -timedelta(days=1, seconds=0.5)
    assert xsd.boolean("1") is True and xsd.boolean("false") is False
    with pytest.raises(LexicalFormError, match="not a fixed duration"):
        xsd.duration("P1M")
    with pytest.raises(LexicalFormError, match="year 10000"):
        xsd.date_time("10000-01-01T00:00:00Z")
    assert xsd.problem("anything", "urn:other") is None and xsd.problem("x", None) is None
