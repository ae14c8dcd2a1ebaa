"""Generic Smart API messages used across the Smart API tests."""

from __future__ import annotations

from datetime import timedelta

from gateway.model import Quality, QualityFlag
from gateway.smartapi.encode import AnyMessage, der_iri
from gateway.smartapi.examples import AMS_SENDER, MGMS_SENDER, T0, all_information_objects
from gateway.smartapi.messages import (
    Activity,
    Entity,
    ErrorMessage,
    Method,
    Notification,
    Request,
    Response,
    SeriesRole,
    TimeSeries,
    ValueObject,
)
from gateway.smartapi.vocab import EntityKind, QuantityKind

BESS = der_iri("demo-microgrid", "bess1")


def read_request() -> Request:
    return Request(
        id="r-1",
        sender=AMS_SENDER,
        generated_at=T0,
        activities=(
            Activity(
                method=Method.READ,
                entities=(
                    Entity(
                        iri=BESS,
                        value_objects=(
                            ValueObject(quantity=QuantityKind.ACTIVE_POWER),
                            ValueObject(quantity=QuantityKind.STATE_OF_CHARGE),
                        ),
                    ),
                ),
            ),
        ),
    )


def read_response() -> Response:
    return Response(
        id="r-1-answer",
        sender=MGMS_SENDER,
        generated_at=T0 + timedelta(seconds=1),
        in_reply_to="r-1",
        activities=(
            Activity(
                method=Method.READ,
                entities=(
                    Entity(
                        iri=BESS,
                        kinds=frozenset({EntityKind.BATTERY, EntityKind.DER}),
                        identifier="bess1",
                        name="Battery",
                        value_objects=(
                            ValueObject(
                                quantity=QuantityKind.ACTIVE_POWER,
                                unit="KiloW",
                                value=-12.5,
                                point="bess1.p",
                                role="active_power",
                                quality=Quality(),
                                time=T0,
                            ),
                            ValueObject(
                                quantity=QuantityKind.STATE_OF_CHARGE,
                                unit="PERCENT",
                                value=None,
                                point="bess1.soc",
                                quality=Quality.invalid(QualityFlag.COMM_FAILURE),
                            ),
                            ValueObject(
                                quantity=QuantityKind.DIMENSIONLESS,
                                unit="UNITLESS",
                                value=True,
                                point="bess1.online",
                            ),
                            ValueObject(
                                quantity=QuantityKind.ENERGY,
                                unit="KiloW-HR",
                                value=7,
                                point="bess1.count",
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )


def notification() -> Notification:
    return Notification(
        id="n-1",
        sender=MGMS_SENDER,
        generated_at=T0,
        activities=(
            Activity(
                method=Method.WRITE,
                start=T0,
                end=T0 + timedelta(hours=1),
                entities=(
                    Entity(
                        iri=BESS,
                        kinds=frozenset({EntityKind.BATTERY}),
                        time_series=(
                            TimeSeries(
                                quantity=QuantityKind.ACTIVE_POWER,
                                unit="W",
                                start=T0,
                                step=timedelta(minutes=15),
                                values=(1.0, 2.5, -3.25, 1e-7),
                                role=SeriesRole.MEASURED,
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )


def error() -> ErrorMessage:
    return ErrorMessage(
        id="e-1",
        sender=MGMS_SENDER,
        generated_at=T0,
        code=422,
        message='bad "value"\non line 2',
        in_reply_to="r-1",
    )


def all_messages() -> list[AnyMessage]:
    return [read_request(), read_response(), notification(), error(), *all_information_objects()]
