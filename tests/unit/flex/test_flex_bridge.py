"""The reserve handler and publisher the northbound layer uses, on the simulated demo
microgrid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import FlexSettings
from gateway.errors import ReserveRefused
from gateway.flex.bridge import FlexReserveHandler, NorthPublisher
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.smartapi import flexibility as sa
from tests.support.flexsim import Bench, BenchClock

START = datetime(2024, 6, 3, 16, 55, tzinfo=UTC)
T17 = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)
AMS = "https://ams.example.org/"
MGMS = "https://mgms.example.org/demo"


class Outbox:
    def __init__(self) -> None:
        self.sent: list[sa.FlexibilityForecast | sa.ReserveVerification] = []

    async def send(self, message: sa.FlexibilityForecast | sa.ReserveVerification) -> bool:
        self.sent.append(message)
        return True


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[Bench, FlexService, Outbox]]:
    bench = Bench(START, sample_s=2.0)
    bench.config.gateway.flex = FlexSettings(interval_s=300, control_cycle_s=5.0, horizon_h=3)
    outbox = Outbox()
    records = await FlexRecords(tmp_path / "flex.sqlite").open()
    publisher = NorthPublisher(outbox.send, MGMS, "demo-microgrid", bench.now)
    service = FlexService(
        bench.config,
        bench.table,
        bench.controller,
        records,
        publisher,
        bench.history,
        BenchClock(bench),
    )
    yield bench, service, outbox
    await records.close()


def notification(
    mid: str, down_kw: float, microgrid: str = "demo-microgrid"
) -> sa.ReserveNotification:
    return sa.ReserveNotification(
        id=mid,
        sender=AMS,
        generated_at=START,
        microgrid=microgrid,
        start=T17,
        step=FIVE,
        purchase="bid-1",
        intervals=tuple(sa.ReservedInterval(p_raise_kw=0.0, p_lower_kw=down_kw) for _ in range(3)),
    )


async def test_whole_reservations_only_and_repeats_get_the_same_answer(
    parts: tuple[Bench, FlexService, Outbox],
) -> None:
    _, service, outbox = parts
    handler = FlexReserveHandler(service)
    ok = notification("n-ok", 30.0)
    await handler.check_notification(ok)
    await handler.apply_notification(ok)
    assert service.reservation("n-ok") is not None
    assert isinstance(outbox.sent[-1], sa.FlexibilityForecast)  # the offer left changed
    too_big = notification("n-big", 150.0)
    with pytest.raises(ReserveRefused) as refused:
        await handler.apply_notification(too_big)
    assert refused.value.reason in {
        "insufficient-flexibility",
        "coupling-point-limit",
        "insufficient-energy",
    }
    assert "% of the reserved bands fit; nothing was held" in refused.value.detail
    assert service.reservation("n-big") is None
    with pytest.raises(ReserveRefused):  # the same message again: the same refusal
        await handler.apply_notification(too_big)
    await handler.apply_notification(ok)  # repeat of an accepted one: fine, nothing new
    assert [r.id for r in service.reservations] == ["n-ok"]
    with pytest.raises(ReserveRefused) as wrong:
        await handler.check_notification(notification("n-x", 5.0, microgrid="other-grid"))
    assert wrong.value.reason == "wrong-microgrid"


async def test_activation_through_the_handler_and_verification_to_the_outbox(
    parts: tuple[Bench, FlexService, Outbox],
) -> None:
    bench, service, outbox = parts
    handler = FlexReserveHandler(service)
    await handler.apply_notification(notification("n-1", 30.0))
    while bench.now() < T17:
        await service.step()
        bench.advance(5)
    plan = service.plan
    assert plan is not None
    base = float(plan.pcc_p[plan.horizon.index(bench.now()) or 0])

    def activation(aid: str, note: str) -> sa.ReserveActivation:
        return sa.ReserveActivation(
            id=aid,
            sender=AMS,
            generated_at=T17,
            microgrid="demo-microgrid",
            notification=note,
            p_kw=base - 20.0,
            q_kvar=0.0,
            start=T17,
            end=T17 + FIVE,
        )

    with pytest.raises(ReserveRefused) as unknown:
        await handler.apply_activation(activation("a-0", "n-unknown"))
    assert unknown.value.reason == "unknown-notification"
    await handler.apply_activation(activation("a-1", "n-1"))
    while bench.now() < T17 + FIVE + timedelta(seconds=10):
        await service.step()
        bench.advance(5)
    verifications = [m for m in outbox.sent if isinstance(m, sa.ReserveVerification)]
    assert verifications[-1].id == "a-1.final" and verifications[-1].activation == "a-1"
    (iv,) = verifications[-1].intervals
    assert iv.p_percent >= 95.0
    assert iv.p_delivered_kw == pytest.approx(iv.p_measured_kw - iv.p_baseline_kw)
    assert iv.p_delivered_kw < -18.0  # the coupling point went down by about 20 kW
