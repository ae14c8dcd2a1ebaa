"""Model -> tree (and from there Turtle, N-Triples, rdflib graph, canonical form).

The four information objects are Smart API messages about the microgrid entity: one
Write activity whose entity (the microgrid, `dcterms:identifier` = its id) carries one time
series per column of the profile (role, quantity kind) or, for an activation, the PQ set
point as value objects and the activity's temporal context. Forecast and verification are
Notifications (reports of the MGMS), reserve notification and activation are Requests
(instructions to the MGMS).
"""

from __future__ import annotations

from rdflib import URIRef
from rdflib.namespace import DCTERMS, RDF

from gateway.smartapi import vocab as v
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    InformationObject,
    ReserveActivation,
    ReserveNotification,
    ReserveVerification,
)
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Message,
    Method,
    Notification,
    Request,
    Response,
    SeriesRole,
    TimeSeries,
    ValueObject,
)
from gateway.smartapi.tree import (
    Coll,
    Lit,
    Node,
    date_time,
    double,
    duration,
    integer,
    number,
    string,
)
from gateway.smartapi.vocab import MGMS, QUDT, SMARTAPI, UNIT, EntityKind, QuantityKind

AnyMessage = Request | Response | Notification | ErrorMessage | InformationObject

_TYPE = str(RDF.type)
_MESSAGE_IRI = "urn:mgms:message:"
_MICROGRID_IRI = "urn:mgms:microgrid:"

#: Smart API classes a series of each role also carries, for readers that know only Smart API
ROLE_CLASSES: dict[SeriesRole, tuple[URIRef, ...]] = {
    SeriesRole.BASELINE: (SMARTAPI.Baseline,),
    SeriesRole.MAXIMUM: (SMARTAPI.Limit,),
    SeriesRole.MINIMUM: (SMARTAPI.Limit,),
    SeriesRole.RESERVED_UP: (SMARTAPI.Capacity,),
    SeriesRole.RESERVED_DOWN: (SMARTAPI.Capacity,),
    SeriesRole.SET_POINT: (SMARTAPI.Plan,),
    SeriesRole.MEASURED: (),
    SeriesRole.DELIVERED: (),
    SeriesRole.DELIVERED_PERCENT: (),
}

FLEX_CLASSES: dict[type, URIRef] = {
    FlexibilityForecast: MGMS.FlexibilityForecast,
    ReserveNotification: MGMS.ReserveNotification,
    ReserveActivation: MGMS.ReserveActivation,
    ReserveVerification: MGMS.ReserveVerification,
}

P, Q, PCT = QuantityKind.ACTIVE_POWER, QuantityKind.REACTIVE_POWER, QuantityKind.DIMENSIONLESS
R = SeriesRole

#: the columns of each profile: (role, quantity kind, of, unit, model attribute)
FORECAST_COLUMNS = (
    (R.BASELINE, P, None, "KiloW", "p_kw"),
    (R.MAXIMUM, P, None, "KiloW", "p_max_kw"),
    (R.MINIMUM, P, None, "KiloW", "p_min_kw"),
    (R.BASELINE, Q, None, "KiloVAR", "q_kvar"),
    (R.MAXIMUM, Q, None, "KiloVAR", "q_max_kvar"),
    (R.MINIMUM, Q, None, "KiloVAR", "q_min_kvar"),
)
RESERVE_COLUMNS = (
    (R.RESERVED_UP, P, None, "KiloW", "p_raise_kw"),
    (R.RESERVED_DOWN, P, None, "KiloW", "p_lower_kw"),
    (R.RESERVED_UP, Q, None, "KiloVAR", "q_raise_kvar"),
    (R.RESERVED_DOWN, Q, None, "KiloVAR", "q_lower_kvar"),
)
VERIFICATION_COLUMNS = (
    (R.SET_POINT, P, None, "KiloW", "p_set_kw"),
    (R.BASELINE, P, None, "KiloW", "p_baseline_kw"),
    (R.MEASURED, P, None, "KiloW", "p_measured_kw"),
    (R.DELIVERED, P, None, "KiloW", "p_delivered_kw"),
    (R.DELIVERED_PERCENT, PCT, P, "PERCENT", "p_percent"),
    (R.SET_POINT, Q, None, "KiloVAR", "q_set_kvar"),
    (R.BASELINE, Q, None, "KiloVAR", "q_baseline_kvar"),
    (R.MEASURED, Q, None, "KiloVAR", "q_measured_kvar"),
    (R.DELIVERED, Q, None, "KiloVAR", "q_delivered_kvar"),
    (R.DELIVERED_PERCENT, PCT, Q, "PERCENT", "q_percent"),
)
Column = tuple[SeriesRole, QuantityKind, QuantityKind | None, str, str]


def message_iri(message_id: str) -> str:
    return _MESSAGE_IRI + message_id


def microgrid_iri(microgrid: str) -> str:
    return _MICROGRID_IRI + microgrid


def der_iri(microgrid: str, der: str) -> str:
    return f"{_MICROGRID_IRI}{microgrid}:der:{der}"


def device_iri(microgrid: str, device: str) -> str:
    return f"{_MICROGRID_IRI}{microgrid}:device:{device}"


def _iri(value: str) -> URIRef:
    return URIRef(value)


def value_object_node(vo: ValueObject) -> Node:
    node = Node().add(_TYPE, v.VALUE_OBJECT)
    if vo.quantity is not None:
        node.add(str(QUDT.hasQuantityKind), vo.quantity.iri)
    if vo.unit is not None:
        node.add(str(QUDT.hasUnit), UNIT[vo.unit])
    if vo.value is not None:
        node.add(str(RDF.value), number(vo.value))
    if vo.point is not None:
        node.add(str(MGMS.point), string(vo.point))
    if vo.role is not None:
        node.add(str(MGMS.role), string(vo.role))
    if vo.quality is not None:
        node.add(str(MGMS.quality), string(str(vo.quality)))
    if vo.time is not None:
        node.add(str(DCTERMS.date), date_time(vo.time))
    return node


def _temporal(start: object, end: object) -> Node:
    node = Node().add(_TYPE, v.TEMPORAL_CONTEXT)
    if start is not None:
        node.add(str(SMARTAPI.start), date_time(start))  # type: ignore[arg-type]
    if end is not None:
        node.add(str(SMARTAPI.end), date_time(end))  # type: ignore[arg-type]
    return node


def time_series_node(ts: TimeSeries, forecast: bool = False) -> Node:
    node = Node().add(_TYPE, v.TIME_SERIES)
    if forecast:
        node.add(_TYPE, SMARTAPI.Forecast)
    if ts.role is not None:
        for cls in ROLE_CLASSES[ts.role]:
            node.add(_TYPE, cls)
        node.add(str(MGMS.role), MGMS[ts.role.value])
    node.add(str(QUDT.hasQuantityKind), ts.quantity.iri)
    node.add(str(QUDT.hasUnit), UNIT[ts.unit])
    if ts.of is not None:
        node.add(str(MGMS.quantityOf), ts.of.iri)
    node.add(str(SMARTAPI.timeStep), duration(ts.step))
    node.add(str(SMARTAPI.temporalContext), _temporal(ts.start, ts.end))
    node.add(str(SMARTAPI.list), Coll(tuple(double(x) for x in ts.values)))
    return node


def entity_node(entity: Entity, forecast: bool = False) -> Node:
    node = Node(entity.iri)
    for kind in sorted(entity.kinds):
        node.add(_TYPE, kind.iri)
    if entity.identifier is not None:
        node.add(str(DCTERMS.identifier), string(entity.identifier))
    if entity.name is not None:
        node.add(str(DCTERMS.title), string(entity.name))
    for part in entity.parts:
        node.add(str(DCTERMS.hasPart), _iri(part))
    for vo in entity.value_objects:
        node.add(str(SMARTAPI.valueObject), value_object_node(vo))
    for ts in entity.time_series:
        node.add(str(SMARTAPI.timeSeries), time_series_node(ts, forecast))
    return node


def activity_node(activity: Activity, forecast: bool = False) -> Node:
    node = Node().add(_TYPE, v.ACTIVITY)
    node.add(str(SMARTAPI.method), SMARTAPI[activity.method.value])
    if activity.start is not None or activity.end is not None:
        node.add(str(SMARTAPI.temporalContext), _temporal(activity.start, activity.end))
    for entity in activity.entities:
        node.add(str(SMARTAPI.entity), entity_node(entity, forecast))
    return node


def _header(msg: Message, cls: URIRef, extra: tuple[URIRef, ...] = ()) -> Node:
    node = Node(message_iri(msg.id)).add(_TYPE, cls)
    for e in extra:
        node.add(_TYPE, e)
    node.add(str(SMARTAPI.id), string(msg.id))
    node.add(str(SMARTAPI.generatedBy), _iri(msg.sender))
    node.add(str(SMARTAPI.generatedAt), date_time(msg.generated_at))
    return node


def _microgrid_entity(
    microgrid: str,
    *,
    series: tuple[TimeSeries, ...] = (),
    values: tuple[ValueObject, ...] = (),
) -> Entity:
    return Entity(
        iri=microgrid_iri(microgrid),
        kinds=frozenset({EntityKind.MICROGRID}),
        identifier=microgrid,
        value_objects=values,
        time_series=series,
    )


def profile_series(obj: object, columns: tuple[Column, ...]) -> tuple[TimeSeries, ...]:
    intervals = obj.intervals  # type: ignore[attr-defined]
    return tuple(
        TimeSeries(
            quantity=qk,
            unit=unit,
            start=obj.start,  # type: ignore[attr-defined]
            step=obj.step,  # type: ignore[attr-defined]
            values=tuple(float(getattr(i, attr)) for i in intervals),
            role=role,
            of=of,
        )
        for role, qk, of, unit, attr in columns
    )


def _flex_tree(obj: InformationObject) -> Node:
    flex_class = FLEX_CLASSES[type(obj)]
    if isinstance(obj, ReserveActivation):
        node = _header(obj, v.REQUEST, (flex_class,))
        node.add(str(MGMS.notificationId), string(obj.notification))
        entity = _microgrid_entity(
            obj.microgrid,
            values=(
                ValueObject(quantity=P, unit="KiloW", value=obj.p_kw, role="active_power_setpoint"),
                ValueObject(
                    quantity=Q, unit="KiloVAR", value=obj.q_kvar, role="reactive_power_setpoint"
                ),
            ),
        )
        activity = Activity(method=Method.WRITE, entities=(entity,), start=obj.start, end=obj.end)
        return node.add(str(SMARTAPI.activity), activity_node(activity))
    forecast = isinstance(obj, FlexibilityForecast)
    if isinstance(obj, FlexibilityForecast):
        node = _header(obj, v.NOTIFICATION, (flex_class,))
        series = profile_series(obj, FORECAST_COLUMNS)
    elif isinstance(obj, ReserveNotification):
        node = _header(obj, v.REQUEST, (flex_class,))
        node.add(str(MGMS.purchaseId), string(obj.purchase))
        series = profile_series(obj, RESERVE_COLUMNS)
    else:
        node = _header(obj, v.NOTIFICATION, (flex_class,))
        node.add(str(MGMS.activationId), string(obj.activation))
        series = profile_series(obj, VERIFICATION_COLUMNS)
    activity = Activity(
        method=Method.WRITE, entities=(_microgrid_entity(obj.microgrid, series=series),)
    )
    return node.add(str(SMARTAPI.activity), activity_node(activity, forecast))


def to_tree(msg: AnyMessage) -> list[Node]:
    """The message as a tree rooted at the message node (the first root)."""
    if type(msg) in FLEX_CLASSES:
        return [_flex_tree(msg)]  # type: ignore[arg-type]
    if isinstance(msg, ErrorMessage):
        node = _header(msg, v.ERROR)
        node.add(str(SMARTAPI.errorCode), integer(msg.code))
        node.add(str(SMARTAPI.errorMessage), string(msg.message))
        if msg.in_reply_to is not None:
            node.add(str(MGMS.inReplyTo), string(msg.in_reply_to))
        return [node]
    if isinstance(msg, Request):
        node = _header(msg, v.REQUEST)
    elif isinstance(msg, Response):
        node = _header(msg, v.RESPONSE)
        if msg.in_reply_to is not None:
            node.add(str(MGMS.inReplyTo), string(msg.in_reply_to))
    elif isinstance(msg, Notification):
        node = _header(msg, v.NOTIFICATION)
    else:
        raise TypeError(f"not a Smart API message: {type(msg).__name__}")
    for activity in msg.activities:
        node.add(str(SMARTAPI.activity), activity_node(activity))
    return [node]


__all__ = ["Lit", "to_tree"]
