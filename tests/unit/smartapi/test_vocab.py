"""The product's namespaces make each term once and behave as rdflib's otherwise."""

from __future__ import annotations

import pytest
from rdflib import Namespace, URIRef

from gateway.smartapi.vocab import MGMS, SMARTAPI


def test_a_term_is_made_once_and_equals_rdflibs() -> None:
    first = SMARTAPI.timeSeries
    assert first is SMARTAPI.timeSeries
    assert first == Namespace(str(SMARTAPI)).timeSeries == URIRef(str(SMARTAPI) + "timeSeries")
    assert type(first) is URIRef
    assert MGMS["role"] == MGMS.role
    assert SMARTAPI.count("#") == 1  # str's own attributes stay str's, as in rdflib
    with pytest.raises(AttributeError):
        _ = SMARTAPI.__wrapped__
