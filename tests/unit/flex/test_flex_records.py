from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.flex.model import (
    Activation,
    Band,
    Reason,
    ReasonCode,
    Reservation,
    Verification,
    VerifiedInterval,
)
from gateway.flex.records import LABEL, FlexRecords, RecordTables
from gateway.sqlite import read_only

T0 = datetime(2024, 6, 3, 17, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


async def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "flex.sqlite"
    rec = await FlexRecords(path).open()
    res = Reservation("r1", (Band(T0, T0 + Q, p_up_kw=30.0, q_down_kvar=5.0),))
    reasons = (Reason(ReasonCode.RESERVE, "FCR fcr1", "conflicts with reserve fcr1"),)
    await rec.save_reservation(T0, res, "curtailed", res, reasons)
    act = Activation("a1", T0, T0 + Q, p_kw=12.5, reservation_id="r1")
    await rec.save_activation(
        T0,
        act,
        "accepted",
        12.5,
        None,
        (),
        {"start": T0.isoformat(), "step_s": 900, "p": [40.0], "q": [0.0]},
        "active",
    )
    await rec.pcc_setpoint("a1", T0, 12.5, None)
    await rec.setpoints("a1", T0, [("bess1", "bess1.p_set", 20.0, 20.0, "confirmed", "")])
    iv = VerifiedInterval(T0, T0 + Q, 900, 12.5, 40, 13, 27.5, 27, 98.2, 6.75, "energy_counters")
    await rec.save_verification(Verification("a1", "r1", (iv,), final=False))
    await rec.close()

    again = await FlexRecords(path).open()
    assert await again.accepted_reservations(T0) == [res]
    assert await again.accepted_reservations(T0 + Q) == []  # over
    status = await again.reservation_status("r1")
    assert status == ("curtailed", res, reasons)
    (open_act,) = await again.open_activations()
    assert open_act.activation == act and open_act.baseline is not None
    assert await again.pcc_setpoints("a1") == [(T0, 12.5, None)]
    assert (await again.sent_setpoints("a1"))[0][1:] == ("bess1", "bess1.p_set", 20.0, "confirmed")
    assert await again.verification("a1") == [iv]
    await again.end_activation("a1", T0 + Q, "ended", "done")
    assert await again.open_activations() == []
    log = await again.audit_log()
    assert [(k, s, d) for _, k, s, d, _ in log] == [
        ("reservation", "r1", "curtailed"),
        ("activation", "a1", "accepted"),
    ]
    assert log[0][4] == reasons
    # a synchronous tool reads the same through the same SQL, while the file is open
    with read_only(path, LABEL) as conn:
        assert RecordTables(conn).audit_log("activation") == log[1:]
        assert RecordTables(conn).verification("a1") == [iv]
    await again.close()


async def test_an_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=f"flexibility records {blocker}"):
        await FlexRecords(blocker / "flex.sqlite").open()


async def test_a_failed_write_names_the_file_and_leaves_nothing_half_done(tmp_path: Path) -> None:
    path = tmp_path / "flex.sqlite"
    async with FlexRecords(path) as rec:
        await rec.db.call(lambda conn: conn.execute("DROP TABLE flex_audit"))
        res = Reservation("r1", (Band(T0, T0 + Q, p_up_kw=30.0),))
        with pytest.raises(StoreError, match=f"flexibility records {path}: no such table"):
            await rec.save_reservation(T0, res, "accepted", res, ())
        # the reservation row went with the audit row that failed: one transaction
        assert await rec.reservation_status("r1") is None
