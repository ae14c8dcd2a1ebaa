"""The Smart API form without I/O: requests, readings from answers (units, quality, time,
errors), and the simulator's answers, all through the gateway's Smart API codec."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drivers.cems.protocol import SmartApiAddress, parse
from drivers.cems.smartapi_form import SmartApiPoint, answer, read_request, readings, refusal
from gateway.mapping import Direction, Point
from gateway.model import Quality, QualityFlag
from gateway.protocols.base import PointTyping
from gateway.smartapi import codec
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Request,
    Response,
    ValueObject,
    new_message_id,
)
from gateway.smartapi.vocab import QuantityKind

LOAD = "https://cems.example/load"
SENDER = "https://mgms.example/gateway"
T = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _point(
    pid: str, address: str, unit: str, direction: Direction = Direction.READ
) -> SmartApiPoint:
    parsed = parse(address, PointTyping())
    assert isinstance(parsed, SmartApiAddress)
    return SmartApiPoint(Point(id=pid, address=address, unit=unit, direction=direction), parsed)


P = _point("p", f"<{LOAD}> ActivePower", "KiloW")
CURTAIL = _point("c", f"<{LOAD}> Dimensionless PERCENT", "PERCENT", Direction.READ_WRITE)


def _reply(request: Request, *objects: ValueObject) -> Response:
    entity = Entity(iri=LOAD, value_objects=objects)
    return Response(
        id=new_message_id(),
        sender="https://cems.example/x",
        generated_at=T,
        in_reply_to=request.id,
        activities=(Activity(method=Method.READ, entities=(entity,)),),
    )


def _through_the_codec(message: object) -> object:
    return codec.decode(codec.encode(message), "text/turtle")  # type: ignore[arg-type]


def test_one_read_asks_for_every_wanted_value_object() -> None:
    request = read_request(LOAD, [P, CURTAIL], SENDER)
    decoded = _through_the_codec(request)
    assert isinstance(decoded, Request)
    (activity,) = decoded.activities
    assert activity.method is Method.READ
    (entity,) = activity.entities
    kinds = {(vo.quantity, vo.unit) for vo in entity.value_objects}
    assert kinds == {(QuantityKind.ACTIVE_POWER, None), (QuantityKind.DIMENSIONLESS, "PERCENT")}


def test_values_are_converted_to_the_point_unit_with_quality_and_time() -> None:
    request = read_request(LOAD, [P, CURTAIL], SENDER)
    questionable = Quality.questionable(QualityFlag.SUBSTITUTED)
    reply = _reply(
        request,
        ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="W", value=-12500.0, time=T),
        ValueObject(
            quantity=QuantityKind.DIMENSIONLESS, unit="PERCENT", value=20, quality=questionable
        ),
    )
    decoded = _through_the_codec(reply)
    p, c = readings(decoded, request, [P, CURTAIL])  # type: ignore[arg-type]
    assert p.value == pytest.approx(-12.5) and p.quality.good and p.source_time == T
    assert c.value == 20 and c.quality == questionable


@pytest.mark.parametrize(
    ("objects", "why"),
    [
        ((), "no value in the answer"),
        (
            (
                ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="KiloW", value=1.0),
                ValueObject(quantity=QuantityKind.ACTIVE_POWER, unit="W", value=2.0),
            ),
            "2 values in the answer",
        ),
    ],
)
def test_missing_or_ambiguous_values_are_invalid(
    objects: tuple[ValueObject, ...], why: str
) -> None:
    request = read_request(LOAD, [P], SENDER)
    (reading,) = readings(_reply(request, *objects), request, [P])
    assert not reading.quality.good and why in reading.detail


def test_an_error_or_a_reply_to_another_request_is_refused() -> None:
    request = read_request(LOAD, [P], SENDER)
    error = ErrorMessage(
        id=new_message_id(), sender=SENDER, generated_at=T, code=403, message="not you"
    )
    assert refusal(error, request) == "Smart API error 403: not you"
    other = _reply(read_request(LOAD, [P], SENDER))
    assert "not to" in (refusal(other, request) or "")
    (reading,) = readings(error, request, [P])
    assert reading.detail == "Smart API error 403: not you"


def test_the_simulated_cems_answers_reads_and_applies_writes() -> None:
    applied: list[tuple[str, float]] = []

    def apply(point: Point, value: float) -> str | None:
        applied.append((point.id, value))
        return None

    request = read_request(LOAD, [P, CURTAIL], SENDER)
    reply = answer(request, [P, CURTAIL], lambda p: -3.0, apply, "https://cems.example/x")
    assert isinstance(reply, Response) and reply.in_reply_to == request.id
    got = readings(reply, request, [P, CURTAIL])
    assert [r.value for r in got] == [-3.0, -3.0]

    write = Request(
        id=new_message_id(),
        sender=SENDER,
        generated_at=T,
        activities=(
            Activity(
                method=Method.WRITE,
                entities=(
                    Entity(
                        iri=LOAD,
                        value_objects=(
                            ValueObject(
                                quantity=QuantityKind.DIMENSIONLESS, unit="PERCENT", value=30
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
    assert isinstance(answer(write, [P, CURTAIL], lambda p: 0.0, apply, SENDER), Response)
    assert applied == [("c", 30.0)]
    unknown = read_request("https://cems.example/nobody", [P], SENDER)
    refused = answer(unknown, [P], lambda p: 0.0, apply, SENDER)
    assert isinstance(refused, ErrorMessage) and refused.code == 404
