"""The default reserve book's business checks, with a fixed clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import ReserveRefused
from gateway.north.certs import AMS_IDENTITY
from gateway.north.reserves import SqliteReserveBook
from gateway.smartapi.flexibility import ReserveActivation, ReservedInterval, ReserveNotification
from gateway.smartapi.messages import new_message_id
from tests.support import north as support

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)
STEP = timedelta(minutes=15)


@pytest.fixture
async def book(tmp_path: Path) -> AsyncIterator[SqliteReserveBook]:
    async with SqliteReserveBook(tmp_path / "r.sqlite", clock=lambda: NOW) as b:
        # baseline P 40 (10..70), Q 5 (-20..30) for 8 intervals from T0
        await b.record_forecast(support.forecast(start=T0))
        yield b


def notification(*bands: ReservedInterval, start: datetime = T0) -> ReserveNotification:
    return ReserveNotification(
        id=new_message_id(),
        sender=AMS_IDENTITY,
        generated_at=NOW,
        microgrid=support.MICROGRID,
        start=start,
        step=STEP,
        purchase="p-1",
        intervals=bands or (ReservedInterval(p_raise_kw=10, p_lower_kw=20),),
    )


def activation(
    n: ReserveNotification,
    p: float,
    q: float = 5.0,
    start: datetime = NOW,
    end: datetime | None = T0 + STEP,
    sender: str = AMS_IDENTITY,
) -> ReserveActivation:
    return ReserveActivation(
        id=new_message_id(),
        sender=sender,
        generated_at=NOW,
        microgrid=support.MICROGRID,
        notification=n.id,
        p_kw=p,
        q_kvar=q,
        start=start,
        end=end,
    )


async def accepted(book: SqliteReserveBook, n: ReserveNotification) -> ReserveNotification:
    await book.check_notification(n)
    await book.apply_notification(n)
    return n


async def refused(book: SqliteReserveBook, a: ReserveActivation, reason: str) -> str:
    with pytest.raises(ReserveRefused) as err:
        await book.check_activation(a)
    assert err.value.reason == reason, err.value
    return err.value.detail


@pytest.mark.parametrize("p", [20.0, 40.0, 50.0])  # band 40-20 .. 40+10, edges included
async def test_set_points_inside_the_band_pass(book: SqliteReserveBook, p: float) -> None:
    n = await accepted(book, notification())
    await book.check_activation(activation(n, p))


@pytest.mark.parametrize("p", [19.9, 50.1])
async def test_set_points_outside_the_band_are_refused(book: SqliteReserveBook, p: float) -> None:
    n = await accepted(book, notification())
    detail = await refused(book, activation(n, p), "outside-band")
    assert "20..50" in detail and f"{p:g}" in detail


async def test_q_is_checked_too(book: SqliteReserveBook) -> None:
    n = await accepted(
        book, notification(ReservedInterval(p_raise_kw=10, p_lower_kw=10, q_raise_kvar=2))
    )
    await book.check_activation(activation(n, 40.0, q=7.0))
    detail = await refused(book, activation(n, 40.0, q=7.5), "outside-band")
    assert detail.startswith(f"interval {T0.isoformat()}: Q")


async def test_every_covered_interval_must_hold_the_set_point(book: SqliteReserveBook) -> None:
    wide, narrow = ReservedInterval(p_raise_kw=10, p_lower_kw=20), ReservedInterval(0, 5)
    n = await accepted(book, notification(wide, narrow))
    await book.check_activation(activation(n, 25.0, end=T0 + STEP))  # first interval only
    detail = await refused(book, activation(n, 25.0, end=T0 + 2 * STEP), "outside-band")
    assert (T0 + STEP).isoformat() in detail
    # without an end the activation runs to the end of the reserved period
    await refused(book, activation(n, 25.0, end=None), "outside-band")


async def test_window_and_expiry(book: SqliteReserveBook) -> None:
    n = await accepted(book, notification())
    await refused(book, activation(n, 40.0, start=T0 - timedelta(minutes=1)), "outside-window")
    await refused(book, activation(n, 40.0, end=T0 + STEP + timedelta(seconds=1)), "outside-window")
    await refused(book, activation(n, 40.0, start=T0, end=T0 + timedelta(minutes=4)), "expired")


async def test_unknown_and_foreign_notifications(book: SqliteReserveBook) -> None:
    n = notification()
    await refused(book, activation(n, 40.0), "unknown-notification")
    await accepted(book, n)
    await refused(
        book, activation(n, 40.0, sender="https://other.example/ams"), "foreign-notification"
    )


async def test_no_forecast_no_activation(book: SqliteReserveBook) -> None:
    later = T0 + 8 * STEP  # beyond the 8 forecast intervals
    n = await accepted(book, notification(start=later))
    a = activation(n, 40.0, start=later, end=later + STEP)
    await refused(book, a, "no-baseline")


async def test_notification_checks(book: SqliteReserveBook) -> None:
    with pytest.raises(ReserveRefused, match="exceeds the 30 offered") as err:
        await book.check_notification(notification(ReservedInterval(p_raise_kw=31, p_lower_kw=0)))
    assert err.value.reason == "exceeds-offered-flexibility"
    with pytest.raises(ReserveRefused) as err:
        await book.check_notification(notification(start=T0 - 2 * STEP))
    assert err.value.reason == "expired"


async def test_apply_is_idempotent(book: SqliteReserveBook) -> None:
    n = await accepted(book, notification())
    await book.apply_notification(n)
    a = activation(n, 30.0)
    await book.apply_activation(a)
    await book.apply_activation(a)
    assert [s.id for s in await book.activations()] == [a.id]
    stored = await book.notification(n.id)
    assert stored is not None and stored.end == T0 + STEP
