"""Recovery after a (re)start: what the flexibility records hold becomes the service's
state again (accepted reservations, activations that were in force), the first readings
are awaited, and set point writes a kill cut are settled as unknown.

A message that arrives just after a restart (the AMS repeating what it saw no answer to)
is decided on this, not on an empty book.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.flex.conflict import find_reservation
from gateway.flex.model import UNKNOWN, ActivationDecision, DecisionStatus, Reservation
from gateway.flex.ports import PointValues, RecoveryRecords
from gateway.flex.running import Running, baseline_from_json
from gateway.flex.verify import Setpoint
from gateway.mapping import Quantity

log = logging.getLogger(__name__)

#: how long the first decision after a start waits for the first readings
READINGS_WAIT_S = 15.0


@dataclass(frozen=True)
class Recovered:
    reservations: list[Reservation]
    #: activations recorded as open, each with the note of its interruption, in order
    activations: list[tuple[Running, str]]


async def load(records: RecoveryRecords, now: datetime) -> Recovered:
    """Accepted reservations still held and the activations recorded as open, with their
    baseline, the set points decided so far and how far they were verified."""
    reservations = await records.accepted_reservations(now)
    activations = []
    for rec in await records.open_activations():
        act = rec.activation
        base = baseline_from_json(rec.baseline) if rec.baseline else None
        if base is None:
            continue
        reservation = find_reservation(act, reservations)
        decision = ActivationDecision(
            act.id, DecisionStatus(rec.status), rec.p_kw, rec.q_kvar, rec.reasons
        )
        running = Running(act, reservation, base, decision)
        running.setpoints = [Setpoint(t, p, q) for t, p, q in await records.pcc_setpoints(act.id)]
        if not running.setpoints and rec.p_kw is not None:
            # killed before its first control cycle: what was decided is what was asked
            # from its start, so the verification does not take the baseline for it
            running.setpoints = [Setpoint(act.start, rec.p_kw, rec.q_kvar)]
        sent = await records.sent_setpoints(act.id)
        last = sent[-1][0] if sent else act.start
        note = (
            f"control interrupted by a gateway restart between {last:%H:%M:%S} and "
            f"{now:%H:%M:%S} UTC"
        )
        running.notes.append(note)
        done = [v.end for v in await records.verification(act.id)]
        running.verified_until = max(done) if done else None
        activations.append((running, note))
    return Recovered(reservations, activations)


async def await_readings(points: PointValues, ders: Sequence[str]) -> None:
    """After a (re)start the point table is empty until the first polls: wait (bounded)
    for the active power of the coupling point and of every DER, so that no plan,
    baseline or decision is made from nothing."""
    needed = [der for der in ders if points.find(der, Quantity.ACTIVE_POWER)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READINGS_WAIT_S
    while True:
        missing = [d for d in needed if points.value(d, Quantity.ACTIVE_POWER) is None]
        if not missing or loop.time() >= deadline:
            break
        await asyncio.sleep(0.1)
    if missing:
        log.warning(
            "no active power reading of %s after %.0f s: deciding without it",
            ", ".join(missing),
            READINGS_WAIT_S,
        )


async def settle_interrupted_writes(records: RecoveryRecords, ders: Collection[str]) -> set[str]:
    """Writes recorded as `sending` were cut by a kill: the device may hold the new value
    or the old one. Say so, mark them `unknown`, and return the DERs (of `ders`) to write
    again: an activation in force rewrites every DER at its next cycle (the writer
    remembers nothing after a start); otherwise they go back to their plan."""
    cut = await records.unsettled_setpoints()
    if not cut:
        return set()
    detail = "the gateway stopped while writing it; written again after the restart"
    for _, origin, der, point, value in cut:
        log.warning("%s: write of %s = %g interrupted (%s): %s", origin, point, value, der, detail)
    await records.settle_setpoints([(seq, UNKNOWN, detail) for seq, *_ in cut])
    return {der for _, _, der, _, _ in cut if der in ders}
