"""Per-peer Smart API profile: what a peer on the published 1.1 library sends and reads.

An allow-list entry says `profile: smartapi-1.1` (or `modern`, the default) and, for a 1.1
peer, the `timezone` its clock runs in (default UTC). Inbound, `read_envelope` accepts the
library's message envelope from such a peer only; outbound, `to_v11` rewrites a message
tree into the forms the library reads.

Inbound, from a 1.1 peer (each is what the library emits; docs/smartapi-profile.md):
- `smartapi:id` as an `xsd:integer` (`setMessageId`): read as the decimal string of that
  integer; the id keeps its role (idempotency, replay protection).
- no `smartapi:id` (the library's default): the message gets the id `sha256-` + the first
  40 hex digits of the SHA-256 of its body. Replay protection and idempotency need an id:
  derived from the bytes, the same body sent again gets the same id and is recognized as
  a repeat, while two different messages (the library stamps `generatedAt` to the
  microsecond) get different ones. The 1.1 scheme does not sign the message header
  anyway, so an id the peer chose would protect no more.
- `xsd:dateTime` without a time zone (`datetime.now()`): read in the peer's configured
  zone, never the gateway's; a modern peer's naive time is still refused.
Everything else (units, list shapes, multipart, text/plain) is format-level and handled
where the format is read (gateway.smartapi.legacy, codec, security.legacy).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCTERMS, RDF, RDFS, XSD

from gateway.errors import SmartApiError
from gateway.smartapi.decode import message_node
from gateway.smartapi.peers import Profiles
from gateway.smartapi.tree import Coll, Lit, Node, Obj, integer
from gateway.smartapi.vocab import (
    LEGACY_QUANTITIES,
    LEGACY_UNITS,
    MGMS,
    NASA_QUDT,
    NASA_UNIT,
    QUDT,
    SMARTAPI,
    UNIT,
)

# -- inbound ---------------------------------------------------------------------------------

# the lexical forms the library writes (rdflib 4 of Python 2): kept here, in one place
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NAIVE_DATETIME = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})T"
    r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]{1,12}))?"
)
_INTEGER_TYPES = {XSD.integer, XSD.int, XSD.long, XSD.nonNegativeInteger, XSD.positiveInteger}


def derived_id(body: bytes) -> str:
    return "sha256-" + hashlib.sha256(body).hexdigest()[:40]


def read_envelope(graph: Graph, body: bytes, profiles: Profiles) -> None:
    """Rewrite, in place, the 1.1 envelope of a message from a peer whose profile is
    smartapi-1.1; a modern peer's message is left as it is (and checked strictly)."""
    try:
        node = message_node(graph)
    except SmartApiError:
        return  # the decoder names what is wrong
    sender = graph.value(node, SMARTAPI.generatedBy)
    profile = profiles.of(str(sender) if isinstance(sender, URIRef) else None)
    if not profile.legacy:
        return
    ids = list(graph.objects(node, SMARTAPI.id))
    if not ids:
        graph.add((node, SMARTAPI.id, Literal(derived_id(body))))
    for value in ids:
        if (
            isinstance(value, Literal)
            and value.datatype in _INTEGER_TYPES
            and _INTEGER.fullmatch(str(value))
        ):
            graph.remove((node, SMARTAPI.id, value))
            graph.add((node, SMARTAPI.id, Literal(str(int(str(value))))))
    for s, p, o in list(graph.triples((None, None, None))):
        if isinstance(o, Literal) and o.datatype == XSD.dateTime:
            aware = naive_in(str(o), profile.zone)
            if aware is not None:
                graph.remove((s, p, o))
                graph.add((s, p, Literal(aware.isoformat(), datatype=XSD.dateTime)))


def naive_in(lexical: str, zone: ZoneInfo) -> datetime | None:
    """A naive xsd:dateTime read in `zone`, in UTC; None when the form has a zone or is not
    the plain form (the decoder then judges it)."""
    match = _NAIVE_DATETIME.fullmatch(lexical)
    if match is None:
        return None
    g = match.groupdict()
    try:
        local = datetime(
            int(g["y"]),
            int(g["mo"]),
            int(g["d"]),
            int(g["h"]),
            int(g["mi"]),
            int(g["s"]),
            int((g["f"] or "0")[:6].ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError:
        return None
    return local.astimezone(UTC)


# -- outbound --------------------------------------------------------------------------------

_TYPE = str(RDF.type)
_HAS_UNIT = str(QUDT.hasUnit)
_HAS_QK = str(QUDT.hasQuantityKind)
_TIME_SERIES = str(SMARTAPI.timeSeries)
_ENTITY = str(SMARTAPI.entity)
_ACTIVITY = str(SMARTAPI.activity)
_ID = str(SMARTAPI.id)
_NASA_UNITS = {str(UNIT[new]): str(NASA_UNIT[old]) for old, new in LEGACY_UNITS.items()}
_NASA_QUANTITIES = {str(kind.iri): str(old) for old, kind in LEGACY_QUANTITIES.items()}
#: the entity class every entity gets: the 1.1 class mapper knows Device, not ours
_DEVICE = URIRef(SMARTAPI.Device)
_ROLE = str(MGMS.role)
_DATE = str(DCTERMS.date)
_INSTANT = str(SMARTAPI.instant)
_VALUE_OBJECT = URIRef(SMARTAPI.ValueObject)
_QUANTITY_OF = str(MGMS.quantityOf)


def _local(term: object) -> str:
    """The local name of an IRI: `...#Baseline`, `.../ActivePower` -> the last part."""
    return re.split(r"[#/]", str(term))[-1]


def integer_id(message_id: str) -> int:
    """The xsd:integer a 1.1 peer reads for one of our ids: a UUID's own 128-bit number
    (reversible), digits as they are, anything else the first 63 bits of its SHA-256."""
    if message_id.isascii() and message_id.isdigit():
        return int(message_id)
    try:
        return uuid.UUID(message_id).int
    except ValueError:
        return int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:8], "big") >> 1


def to_v11(roots: list[Node]) -> list[Node]:
    """The message tree in the forms the 1.1 library reads (the tree is rewritten in
    place and returned): an integer id; NASA QUDT unit and quantity terms where one
    exists; a value object's time also as smartapi:instant; every entity also typed
    smartapi:Device; activities named (the library signs
    and encrypts each as its own part, its entity inside); time series moved from their
    entity to the activity that names it (the library reads series only there), named
    by their role (rdfs:label); their values stay an RDF collection, which the library's
    list reader takes (rdf:first/rdf:rest)."""
    message = roots[0]
    own_id = next((o.lexical for p, o in message.props if p == _ID and isinstance(o, Lit)), "")
    message.props = [
        (p, integer(integer_id(o.lexical)) if p == _ID and isinstance(o, Lit) else o)
        for p, o in message.props
    ]
    named = {n.iri: n for n in roots if n.iri is not None}
    activities = [o for p, o in message.props if p == _ACTIVITY and isinstance(o, Node)]
    for index, activity in enumerate(activities):
        if activity.iri is None:  # named, so that it can travel as a signed part
            activity.iri = f"urn:mgms:activity:{own_id}:{index}"
        for _p, target in [(p, o) for p, o in activity.props if p == _ENTITY]:
            iri = str(target.iri) if isinstance(target, Node) else str(target)
            entity = target if isinstance(target, Node) else named.get(iri)
            if entity is None:
                continue
            if (_TYPE, _DEVICE) not in entity.props:
                entity.props.insert(0, (_TYPE, _DEVICE))
            series = [o for p, o in entity.props if p == _TIME_SERIES]
            entity.props = [(p, o) for p, o in entity.props if p != _TIME_SERIES]
            activity.props.extend((_TIME_SERIES, s) for s in series)
    for node in _walk(roots):
        dates = [o for p, o in node.props if p == _DATE]
        if dates and (_TYPE, _VALUE_OBJECT) in node.props:
            node.add(_INSTANT, dates[0])  # the library reads a value's time there only
        roles = [o for p, o in node.props if p == _ROLE and isinstance(o, URIRef)]
        if roles:  # the library keeps a series' rdfs:label as its name; mgms:role it drops
            of = [_local(o) for p, o in node.props if p == _QUANTITY_OF]
            node.add(str(RDFS.label), Lit(" ".join([_local(roles[0]), *of])))
        node.props = [_v11_term(p, o) for p, o in node.props]
    return roots


def _v11_term(p: str, o: Obj) -> tuple[str, Obj]:
    if p == _HAS_UNIT and isinstance(o, URIRef) and str(o) in _NASA_UNITS:
        return str(NASA_QUDT.unit), URIRef(_NASA_UNITS[str(o)])
    if p == _HAS_QK and isinstance(o, URIRef) and str(o) in _NASA_QUANTITIES:
        return str(NASA_QUDT.quantityKind), URIRef(_NASA_QUANTITIES[str(o)])
    return p, o


def _walk(roots: list[Node]) -> list[Node]:
    """Every node of the tree, once."""
    seen: dict[int, Node] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for _p, o in node.props:
            if isinstance(o, Node):
                stack.append(o)
            elif isinstance(o, Coll):
                stack.extend(i for i in o.items if isinstance(i, Node))
    return list(seen.values())
