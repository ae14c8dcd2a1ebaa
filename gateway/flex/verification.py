"""Reserve Verification, the last step of the CRP flow: per completed interval of the
activation in force, and once more (final) after it ended, set, baseline, measured and
delivered, from the store's history; recorded, then published to the AMS.

It owns the activations that ended and wait for their final verification: the store must
hold the meter's readings beyond the end first (`VERIFY_DELAY`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.flex.baseline import History, Sample, pairs
from gateway.flex.inputs import FlexModel
from gateway.flex.model import Verification
from gateway.flex.ports import (
    FlexObserver,
    FlexPublisher,
    PointValues,
    Unobserved,
    VerificationRecords,
)
from gateway.flex.running import Running
from gateway.flex.verify import Measurements, verify
from gateway.mapping import Quantity

log = logging.getLogger(__name__)

#: how long after an interval (or activation) ends its verification waits, so that the
#: store holds the meter's readings beyond the end (counters are interpolated there)
VERIFY_DELAY = timedelta(seconds=3)
#: history read either side of a verified period
MARGIN = timedelta(minutes=1)


class Verifier:
    def __init__(
        self,
        records: VerificationRecords,
        publisher: FlexPublisher,
        points: PointValues,
        history: History | None,
    ) -> None:
        self.records = records
        self.publisher = publisher
        self.points = points
        self.history = history
        self.observer: FlexObserver = Unobserved()
        #: ended activations waiting for their final verification (and when they ended)
        self._closing: list[tuple[Running, datetime]] = []

    async def completed(
        self, run: Running, model: FlexModel, now: datetime, final: bool
    ) -> Verification | None:
        """Publish the verification of the intervals completed by `now` (all intervals, cut
        at `now`, when final)."""
        if self.history is None:
            return None
        act = run.activation
        h = run.baseline.horizon
        if final:
            upto = now
        else:
            i = h.index(now)
            upto = h.start_of(i) if i is not None else min(now, h.end)
            if upto <= act.start or (run.verified_until is not None and upto <= run.verified_until):
                return None
        v = verify(
            act.id,
            run.reservation.id if run.reservation is not None else act.reservation_id,
            run.baseline,
            act.start,
            upto if final else act.end,
            upto,
            run.setpoints,
            await self._measurements(model, act.start, upto),
            final=final,
            note="; ".join(run.notes),
            reasons=run.decision.reasons,
        )
        if not final and run.verified_until is not None:
            fresh = tuple(x for x in v.intervals if x.start >= run.verified_until)
            v = replace(v, intervals=fresh)
        run.verified_until = upto
        if not v.intervals and not final:
            return None
        await self.records.save_verification(v)
        await self.publisher.verification(v)
        self.observer.verified(v)
        return v

    async def _measurements(self, model: FlexModel, start: datetime, end: datetime) -> Measurements:
        """Coupling-point history around [start, end): energy counters of the configured
        billing meter (coupling_point.billing_meter) where it maps them, else the first
        counter; power samples of the first power point."""
        pcc = model.pcc

        async def series(q: Quantity, billing: bool = False) -> list[Sample]:
            found = self.points.find(pcc, q)
            if billing:
                found = sorted(found, key=lambda m: m.device.id != model.billing_meter)
            if not found or self.history is None:
                return []
            rows = await self.history.range(found[0].point.id, start - MARGIN, end + MARGIN)
            return pairs(rows)

        return Measurements(
            p=await series(Quantity.ACTIVE_POWER),
            q=await series(Quantity.REACTIVE_POWER),
            e_import=await series(Quantity.ENERGY_IMPORT, billing=True),
            e_export=await series(Quantity.ENERGY_EXPORT, billing=True),
            q_import=await series(Quantity.REACTIVE_ENERGY_IMPORT, billing=True),
            q_export=await series(Quantity.REACTIVE_ENERGY_EXPORT, billing=True),
        )

    def ended(self, run: Running, at: datetime) -> None:
        """`run` ended at `at`: its final verification and the record's close follow in
        `close_due` once the readings beyond the end are stored."""
        self._closing.append((run, max(at, run.activation.start)))

    async def close_due(self, model: FlexModel, now: datetime, force: bool = False) -> None:
        for run, at in list(self._closing):
            if not force and now < at + VERIFY_DELAY:
                continue
            self._closing.remove((run, at))
            act = run.activation
            done = await self.records.final_verification(act.id)
            if done:
                # computed before a restart, and maybe sent: the same message again (the
                # outbox drops it if queued), so what the AMS holds is what the records say
                rid = run.reservation.id if run.reservation is not None else act.reservation_id
                note = "; ".join(run.notes)
                v = Verification(act.id, rid, tuple(done), True, note, run.decision.reasons)
                await self.publisher.verification(v)
            else:
                await self.completed(run, model, at, final=True)
            summary = "; ".join(run.notes) or f"ended at {at:%H:%M:%S} UTC"
            await self.records.end_activation(run.activation.id, now, "ended", summary)
            self.observer.ended(run.activation, at, summary)
