"""XSD 1.1 lexical forms: the one place where a literal from the wire becomes a value.

Python's own conversions accept more than XSD does (`float("1_0") == 10.0`,
`float("\\u0665") == 5.0`, `Decimal("1_1")`, surrounding Unicode spaces), so every literal
of a datatype named here is checked against its XSD 1.1 lexical grammar (XML Schema 1.1
Part 2, section 3.3) before it is converted. The grammars are ASCII only and admit no
whitespace: RDF literals carry the lexical form itself.

    problem(lexical, datatype)  None, or what is wrong (None too for a datatype not named here)
    check(lexical, datatype)    raises LexicalFormError with that text
    number / boolean / date_time / duration   the value of a checked literal
    check_statement(s, p, o)    raises WrongDatatype naming the term and node: every parser
                                path (oxparse, the JSON-LD store) runs it on each statement

Callers name where the literal was (term and node); the value functions only say what is
wrong with it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Final

from rdflib import BNode, Literal
from rdflib.term import Node as RdfNode

from gateway.errors import LexicalFormError, WrongDatatype
from gateway.smartapi.vocab import curie

XSD_NS: Final = "http://www.w3.org/2001/XMLSchema#"

# the grammars of XSD 1.1 Part 2 (3.3.x "Lexical Mapping"), written out with ASCII classes
_SIGN = r"[+-]?"
_DECIMAL = rf"{_SIGN}(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DOUBLE = rf"(?:{_DECIMAL}(?:[eE]{_SIGN}[0-9]+)?|{_SIGN}INF|NaN)"
_INTEGER = rf"{_SIGN}[0-9]+"
_BOOLEAN = r"(?:true|false|1|0)"
_YEAR = r"-?(?:[1-9][0-9]{3,}|0[0-9]{3})"
_TIME = r"(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?|24:00:00(?:\.0+)?)"
_ZONE = r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_DATETIME = (
    rf"(?P<year>{_YEAR})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12][0-9]|3[01])"
    rf"T(?P<time>{_TIME})(?P<zone>{_ZONE})?"
)
_SECONDS = r"[0-9]+(?:\.[0-9]+)?S"
# at least one field, and a T only before at least one time field (checked in _duration)
_DURATION = (
    r"(?P<neg>-)?P(?:(?P<Y>[0-9]+)Y)?(?:(?P<M>[0-9]+)M)?(?:(?P<D>[0-9]+)D)?"
    r"(?P<T>T(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+(?:\.[0-9]+)?)S)?)?"
)

_INTEGER_RANGES: Final[dict[str, tuple[int | None, int | None]]] = {
    "integer": (None, None),
    "long": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-(2**7), 2**7 - 1),
    "nonNegativeInteger": (0, None),
    "positiveInteger": (1, None),
    "nonPositiveInteger": (None, 0),
    "negativeInteger": (None, -1),
    "unsignedLong": (0, 2**64 - 1),
    "unsignedInt": (0, 2**32 - 1),
    "unsignedShort": (0, 2**16 - 1),
    "unsignedByte": (0, 2**8 - 1),
}
_GRAMMARS: Final[dict[str, re.Pattern[str]]] = {
    "boolean": re.compile(_BOOLEAN),
    "decimal": re.compile(_DECIMAL),
    "double": re.compile(_DOUBLE),
    "float": re.compile(_DOUBLE),
    **{name: re.compile(_INTEGER) for name in _INTEGER_RANGES},
    "dateTime": re.compile(_DATETIME),
    "dateTimeStamp": re.compile(_DATETIME),
    "duration": re.compile(_DURATION),
    "dayTimeDuration": re.compile(_DURATION),
    "yearMonthDuration": re.compile(_DURATION),
}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

#: the datatypes (local names) whose lexical form this module checks
GOVERNED: Final = frozenset(_GRAMMARS)
NUMERIC: Final = frozenset({"decimal", "double", "float", *_INTEGER_RANGES})


#: local name by datatype IRI, for the datatypes this module knows
_LOCAL: Final = {XSD_NS + name: name for name in (*_GRAMMARS, "string")}


def _local(datatype: str) -> str | None:
    return _LOCAL.get(str(datatype))  # a plain string: URIRef keys compare in Python


def problem(lexical: str, datatype: str | None) -> str | None:
    """What is wrong with `lexical` as a literal of `datatype` (an IRI), or None when it is
    well-formed or the datatype is not one this module governs."""
    name = _local(datatype) if datatype else None
    if name is None or name not in _GRAMMARS:
        return None
    found = _GRAMMARS[name].fullmatch(lexical)
    if found is None:
        return f"{lexical!r} is not an xsd:{name} lexical form"
    if name in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[name]
        try:
            value = int(lexical)
        except ValueError:  # beyond Python's digit limit for int()
            return f"xsd:{name} of {len(lexical)} characters is too long"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{lexical!r} is outside the range of xsd:{name}"
    elif name in ("dateTime", "dateTimeStamp"):
        return _date_time_problem(found, name)
    elif name.endswith("uration"):
        return _duration_problem(found, name, lexical)
    return None


def _date_time_problem(found: re.Match[str], name: str) -> str | None:
    year, month, day = int(found["year"]), int(found["month"]), int(found["day"])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if day > _DAYS_IN_MONTH[month - 1] or (month == 2 and day == 29 and not leap):
        return f"{found.string!r}: day {day} does not exist in {found['year']}-{found['month']}"
    if name == "dateTimeStamp" and found["zone"] is None:
        return f"{found.string!r}: an xsd:dateTimeStamp needs a timezone"
    return None


def _duration_problem(found: re.Match[str], name: str, lexical: str) -> str | None:
    fields = [found[k] for k in "YMDhms"]
    if all(f is None for f in fields):
        return f"{lexical!r} is not an xsd:{name} lexical form (no field)"
    if found["T"] is not None and all(found[k] is None for k in "hms"):
        return f"{lexical!r} is not an xsd:{name} lexical form (T without a time field)"
    if name == "dayTimeDuration" and (found["Y"] or found["M"]):
        return f"{lexical!r}: an xsd:dayTimeDuration has no years or months"
    if name == "yearMonthDuration" and any(found[k] for k in "Dhms"):
        return f"{lexical!r}: an xsd:yearMonthDuration has only years and months"
    return None


def check(lexical: str, datatype: str | None) -> None:
    """Raises LexicalFormError when `lexical` is not a form of `datatype`."""
    wrong = problem(lexical, datatype)
    if wrong is not None:
        raise LexicalFormError(wrong)


def check_statement(subject: RdfNode, predicate: RdfNode, obj: RdfNode) -> None:
    """A statement whose object is a literal of a governed datatype in a form XSD does not
    allow is refused while the body is parsed (nothing downstream sees its value)."""
    if isinstance(obj, Literal) and obj.datatype is not None:
        wrong = problem(str(obj), str(obj.datatype))
        if wrong is not None:
            node = "a blank node" if isinstance(subject, BNode) else f"<{subject}>"
            raise WrongDatatype(curie(predicate), node, wrong)


def number(lexical: str, datatype: str) -> bool | int | float:
    """The value of a numeric or boolean literal: bool, int (integer types) or float."""
    check(lexical, datatype)
    name = _local(datatype)
    if name == "boolean":
        return lexical in ("true", "1")
    if name in _INTEGER_RANGES:
        return int(lexical)
    if name == "decimal":
        return float(Decimal(lexical))
    if name in ("double", "float"):
        return float(lexical)  # the grammar admits only what float() reads the same way
    raise LexicalFormError(f"{datatype} is not a numeric datatype")


def boolean(lexical: str) -> bool:
    value = number(lexical, XSD_NS + "boolean")
    assert isinstance(value, bool)
    return value


def date_time(lexical: str) -> datetime:
    """An xsd:dateTime; naive when the literal has no timezone. 24:00:00 is the next
    day's midnight; digits beyond microseconds are cut."""
    check(lexical, XSD_NS + "dateTime")
    found = _GRAMMARS["dateTime"].fullmatch(lexical)
    assert found is not None
    year = int(found["year"])
    if not 1 <= year <= 9999:
        raise LexicalFormError(f"{lexical!r}: year {year} is outside 1..9999")
    hh, mm, ss = found["time"].split(":")
    whole, _, fraction = ss.partition(".")
    midnight_after = hh == "24"
    value = datetime(
        year,
        int(found["month"]),
        int(found["day"]),
        0 if midnight_after else int(hh),
        int(mm),
        int(whole),
        int((fraction + "000000")[:6]),
        tzinfo=_zone(found["zone"]),
    )
    return value + timedelta(days=1) if midnight_after else value


def _zone(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text == "Z":
        return UTC
    hours, minutes = text[1:].split(":")
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-offset if text[0] == "-" else offset)


def duration(lexical: str, datatype: str = XSD_NS + "duration") -> timedelta:
    """An xsd:duration (or dayTimeDuration) of fixed length: years and months other than
    zero have none and are refused."""
    check(lexical, datatype)
    found = _GRAMMARS["duration"].fullmatch(lexical)
    assert found is not None
    if int(found["Y"] or 0) or int(found["M"] or 0):
        raise LexicalFormError(f"{lexical!r} has years or months: not a fixed duration")
    seconds = Decimal(found["s"] or 0)
    try:
        value = timedelta(
            days=int(found["D"] or 0),
            hours=int(found["h"] or 0),
            minutes=int(found["m"] or 0),
            seconds=float(seconds),
        )
    except OverflowError:
        raise LexicalFormError(f"{lexical!r} is longer than this gateway handles") from None
    return -value if found["neg"] else value
