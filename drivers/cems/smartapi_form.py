"""The Smart API form of the CEMS protocol, without I/O: the Read and Write requests the
gateway sends, the readings it takes from the answer, and the simulator's answers.

Messages are the gateway's own Smart API model (`gateway.smartapi.messages`) and travel
through its codec (`gateway.smartapi.codec`): there is one Smart API implementation.
A value arrives in the unit its value object names and is converted to the point's unit
(scale and offset of the mapping then apply as for any protocol; leave them at 1 and 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from drivers.base import invalid, to_engineering
from drivers.cems.protocol import SmartApiAddress
from gateway.mapping import Point
from gateway.model import GOOD, Reading
from gateway.smartapi.encode import AnyMessage
from gateway.smartapi.interop import integer_id
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Notification,
    Request,
    Response,
    ValueObject,
    new_message_id,
)
from gateway.units import conversion_factor


@dataclass(frozen=True)
class SmartApiPoint:
    point: Point
    address: SmartApiAddress


def read_request(entity: str, points: Sequence[SmartApiPoint], sender: str) -> Request:
    """One Read of `entity` asking for every value object the points want."""
    wanted = {(p.address.quantity, p.address.unit) for p in points}
    objects = tuple(ValueObject(quantity=kind, unit=unit) for kind, unit in sorted(wanted, key=str))
    return _request(Method.READ, Entity(iri=entity, value_objects=objects), sender)


def write_request(target: SmartApiPoint, value: float | bool, sender: str) -> Request:
    """One Write of the point's value object, in the unit its address names (the CEMS's
    own), else in the point's unit."""
    unit = target.address.unit or target.point.unit
    if not isinstance(value, bool):
        value = value * conversion_factor(target.point.unit, unit)
    vo = ValueObject(quantity=target.address.quantity, unit=unit, value=value)
    return _request(Method.WRITE, Entity(iri=target.address.entity, value_objects=(vo,)), sender)


def _request(method: Method, entity: Entity, sender: str) -> Request:
    return Request(
        id=new_message_id(),
        sender=sender,
        generated_at=datetime.now(UTC),
        activities=(Activity(method=method, entities=(entity,)),),
    )


def reply_ids(request_id: str) -> tuple[str, str]:
    """The ids an answer to `request_id` may name: ours, or the integer a 1.1 peer read it
    as (interop.integer_id: a UUID's own 128-bit number, so it names no other request)."""
    return request_id, str(integer_id(request_id))


def refusal(message: AnyMessage, request: Request) -> str | None:
    """Why `message` is not a successful answer to `request`, or None if it is."""
    if isinstance(message, ErrorMessage):
        return f"Smart API error {message.code}: {message.message}"
    if not isinstance(message, Response):
        return f"answer is a {type(message).__name__}, not a Response"
    if message.in_reply_to not in (None, *reply_ids(request.id)):
        return f"answer replies to {message.in_reply_to}, not to {request.id}"
    return None


def readings(
    message: AnyMessage, request: Request, points: Sequence[SmartApiPoint]
) -> list[Reading]:
    """One reading per point from the answer to `read_request`."""
    why = refusal(message, request)
    if why is not None:
        return [invalid(p.point, why) for p in points]
    assert isinstance(message, Response)
    found = _value_objects(message.activities)
    return [_reading(p, found.get(p.address.entity)) for p in points]


def _value_objects(activities: Sequence[Activity]) -> dict[str, list[ValueObject]]:
    """The value objects of every entity of `activities`, by entity IRI."""
    found: dict[str, list[ValueObject]] = {}
    for activity in activities:
        for entity in activity.entities:
            found.setdefault(entity.iri, []).extend(entity.value_objects)
    return found


def notified(message: Notification, points: Sequence[SmartApiPoint]) -> list[Reading]:
    """Readings of the points whose value objects a CEMS's Notification carries (the other
    points are not touched: a notification says what changed)."""
    found = _value_objects(message.activities)
    out = []
    for target in points:
        objects = found.get(target.address.entity, [])
        if any(_fits(target.address, vo) and vo.value is not None for vo in objects):
            out.append(_reading(target, objects))
    return out


def _reading(target: SmartApiPoint, objects: list[ValueObject] | None) -> Reading:
    point, address = target.point, target.address
    if objects is None:
        return invalid(point, f"answer has no entity {address.entity}")
    matching = [vo for vo in objects if _fits(address, vo) and vo.value is not None]
    if not matching:
        return invalid(point, f"{address}: no value in the answer")
    if len(matching) > 1:
        return invalid(point, f"{address}: {len(matching)} values in the answer, expected one")
    vo = matching[0]
    value = vo.value
    if not isinstance(value, bool) and isinstance(value, int | float):
        assert vo.unit is not None  # a ValueObject with a value has a unit
        try:
            value = value * conversion_factor(vo.unit, point.unit)
        except ValueError:
            return invalid(point, f"{address}: unit {vo.unit} cannot become {point.unit}")
        value = to_engineering(point, value)
    quality = vo.quality if vo.quality is not None else GOOD
    detail = "" if quality.good else "quality as the CEMS reports it"
    return Reading(point.id, value, point.unit, quality, vo.time, detail=detail)


def _fits(address: SmartApiAddress, vo: ValueObject) -> bool:
    return vo.quantity is address.quantity and address.unit in (None, vo.unit)


# -- the simulator's side ----------------------------------------------------------------

#: value of a point in its own unit, or None when the physics does not have it
ValueOf = Callable[[Point], float | None]
#: applies a value (in the point's unit); returns why not, or None
Apply = Callable[[Point, float], str | None]


def answer(
    request: Request,
    points: Sequence[SmartApiPoint],
    value_of: ValueOf,
    apply: Apply,
    sender: str,
) -> Response | ErrorMessage:
    """The CEMS's answer to a Read or Write request over its mapped points."""
    now = datetime.now(UTC)
    activities: list[Activity] = []
    for activity in request.activities:
        entities: list[Entity] = []
        for entity in activity.entities:
            ours = [p for p in points if p.address.entity == entity.iri]
            if not ours:
                return _error(request, 404, f"no entity {entity.iri}", sender)
            objects: list[ValueObject] = []
            for vo in entity.value_objects:
                if activity.method is Method.READ:
                    objects += _read_one(vo, ours, value_of, now)
                else:
                    why = _write_one(vo, ours, apply)
                    if why is not None:
                        return _error(request, 422, why, sender)
                    objects.append(vo)
            entities.append(Entity(iri=entity.iri, value_objects=tuple(objects)))
        activities.append(Activity(method=activity.method, entities=tuple(entities)))
    return Response(
        id=new_message_id(),
        sender=sender,
        generated_at=now,
        in_reply_to=request.id,
        activities=tuple(activities),
    )


def _read_one(
    wanted: ValueObject, ours: list[SmartApiPoint], value_of: ValueOf, now: datetime
) -> list[ValueObject]:
    out = []
    for p in ours:
        if not p.point.direction.readable or wanted.quantity is not p.address.quantity:
            continue
        if wanted.unit is not None and p.address.unit not in (None, wanted.unit):
            continue
        value = value_of(p.point)
        if value is not None:
            out.append(_reported(p, value, now))
    return out


def _reported(p: SmartApiPoint, value: float, now: datetime) -> ValueObject:
    unit = p.address.unit or p.point.unit  # the CEMS reports in its own unit
    return ValueObject(
        quantity=p.address.quantity,
        unit=unit,
        value=value * conversion_factor(p.point.unit, unit),
        quality=GOOD,
        time=now,
    )


def notification(changes: Sequence[tuple[SmartApiPoint, float]], sender: str) -> Notification:
    """The simulated CEMS's Notification of changed values: one entity per IRI, each
    changed point's value object in the CEMS's unit, stamped now."""
    now = datetime.now(UTC)
    by_entity: dict[str, list[ValueObject]] = {}
    for p, value in changes:
        by_entity.setdefault(p.address.entity, []).append(_reported(p, value, now))
    entities = tuple(Entity(iri=iri, value_objects=tuple(vos)) for iri, vos in by_entity.items())
    return Notification(
        id=new_message_id(),
        sender=sender,
        generated_at=now,
        activities=(Activity(method=Method.READ, entities=entities),),
    )


def _write_one(vo: ValueObject, ours: list[SmartApiPoint], apply: Apply) -> str | None:
    targets = [p for p in ours if p.point.direction.writable and _fits(p.address, vo)]
    if not targets or vo.value is None or vo.unit is None:
        return f"no writable {vo.quantity} with a value on this entity"
    value = vo.value
    if isinstance(value, bool):
        value = float(value)
    for target in targets:
        try:
            converted = value * conversion_factor(vo.unit, target.point.unit)
        except ValueError:
            return f"unit {vo.unit} does not fit {target.point.id}"
        why = apply(target.point, converted)
        if why is not None:
            return why
    return None


def _error(request: Request, code: int, message: str, sender: str) -> ErrorMessage:
    return ErrorMessage(
        id=new_message_id(),
        sender=sender,
        generated_at=datetime.now(UTC),
        code=code,
        message=message,
        in_reply_to=request.id,
    )
