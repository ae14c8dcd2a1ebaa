"""The names peers read are explicit constants, and the docs list exactly those."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gateway import errors
from gateway.errors import (
    Forbidden,
    InvalidTerm,
    NotFound,
    Reason,
    RefusalReason,
    SmartApiError,
    WriteFailed,
)
from gateway.north.pipeline import rejection

DOCS = Path(__file__).parents[3] / "docs"

SMART_API_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, SmartApiError) and cls.__module__ == errors.__name__
]
#: raised by the access endpoint only; documented in docs/smartapi-profile.md by name
ACCESS_ONLY = {Forbidden, NotFound, WriteFailed}


def table_rows(doc: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with `header`."""
    lines = (DOCS / doc).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert rows, f"{doc}: the table under {header!r} is empty"
    return rows


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@pytest.mark.parametrize("cls", SMART_API_ERRORS, ids=lambda c: c.__name__)
def test_every_smart_api_error_names_its_reason_and_name_itself(cls: type[SmartApiError]) -> None:
    # explicit on the class, not inherited: a subclass that forgot would answer with its
    # parent's reason
    assert isinstance(cls.__dict__.get("reason"), Reason)
    assert isinstance(cls.__dict__.get("error_name"), str)


def test_reasons_and_names_are_distinct() -> None:
    reasons = [cls.reason for cls in SMART_API_ERRORS]
    names = [cls.error_name for cls in SMART_API_ERRORS]
    assert len(set(reasons)) == len(reasons)
    assert len(set(names)) == len(names)


def test_northbound_table_equals_the_reason_constants() -> None:
    documented: dict[str, set[int]] = {}
    for status, reasons, _meaning in table_rows("northbound.md", "| status | reason |"):
        for code in ticked(reasons):
            documented.setdefault(code, set()).update(int(s) for s in status.split(","))
    expected = set(Reason) - {cls.reason for cls in ACCESS_ONLY}
    assert set(documented) == expected
    for cls in SMART_API_ERRORS:
        if cls not in ACCESS_ONLY:
            assert documented[cls.reason] == {cls.status}, cls.__name__


def test_flexibility_table_equals_the_refusal_constants() -> None:
    rows = table_rows("flexibility.md", "| reason | when |")
    assert {code for reason, _when in rows for code in ticked(reason)} == set(RefusalReason)


def test_access_error_table_names_classes_with_their_codes() -> None:
    by_name = {cls.error_name: cls for cls in SMART_API_ERRORS}
    documented = set()
    for code, names, _meaning in table_rows("smartapi-profile.md", "| code | error |"):
        for name in ticked(names):
            assert name in by_name, f"docs/smartapi-profile.md names unknown error {name}"
            assert by_name[name].code == int(code), name
            documented.add(name)
    assert {by_name[name] for name in documented} >= ACCESS_ONLY


def test_a_refusal_answers_with_the_class_constant_not_its_name() -> None:
    class RenamedTerm(InvalidTerm):
        """A subclass named otherwise still answers as what it is."""

    answer = rejection(RenamedTerm("mgms:x", "_:b0", "bad"), "m-1")
    assert (answer.status, answer.reason) == (422, "invalid-term")
