"""The soak's `hostile` part: hostile inbound messages (tests/support/hostile.py) at the
running gateway's HTTPS endpoint until the deadline, from a separate process.

Messages go out at `--hostile-rate` a second (a sustained attack beside the other loads,
not a flood that would starve them). Figures: `tried` (messages answered), `applied`
(hostile messages the gateway answered 2xx or holds as accepted in its inbound ledger or
flexibility records; must be 0), `unexpected` (answers their class does not allow),
`per_s` and the answers per class.

The gateway's own northbound side is used when its config has a `north:` section with a
development PKI (`mgms certs init`, which holds the AMS's signing key the generator signs
with); without one the part runs a minimal northbound of its own (a fresh development PKI, a
flexibility service of its own on the gateway's points, controller and store, never run:
it only decides) on the soak's event loop, so the messages still meet the real TLS server,
inbound pipeline and reserve handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.flex.bridge import FlexReserveHandler, NorthPublisher
from gateway.flex.records import FlexRecords
from gateway.flex.service import FlexService
from gateway.north.certs import dev_north_config, init_dev_pki
from gateway.north.service import North
from gateway.sqlite import read_only
from tests.support.hostile import fire_from_process

SEED = 9


class HostileInbound:
    name = "hostile"

    def __init__(self, rate: float, in_flight: int = 4, prefix: Sequence[str] = ()) -> None:
        self.rate = rate
        self.prefix = list(prefix)  # a wrapper for the firing process (`nice -n 10`)
        self.in_flight = in_flight
        self.report: dict[str, Any] = {}
        self.applied: int | None = None
        self.note = ""

    async def run(self, gw: Gateway, deadline: float) -> None:
        async with contextlib.AsyncExitStack() as stack:
            north, pki = await self._north(gw, stack)
            assert north.server is not None
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mgms-hostile-")))
            ids = work / "ids.txt"
            left = deadline - asyncio.get_running_loop().time()
            args = [
                *("--pki", str(pki), "--microgrid", north.microgrid, "--seed", str(SEED)),
                *("--max-body", str(north.config.server.max_body_bytes)),
                *("--https", f"https://127.0.0.1:{north.server.port}"),
                *("--https-count", str(10**9), "--duration", f"{max(left, 1.0):.1f}"),
                *("--in-flight", str(self.in_flight), "--rate", str(self.rate)),
                *("--ids", str(ids)),
            ]
            self.report = await fire_from_process(args, max(left, 1.0) + 60, self.prefix)
            sent = set(ids.read_text().split()) if ids.exists() else set()
            self.applied = self._answered_ok() + _held(north.state_dir, sent)

    async def _north(self, gw: Gateway, stack: contextlib.AsyncExitStack) -> tuple[North, Path]:
        """The gateway's northbound side, or a minimal one of our own."""
        if gw.market is not None:
            north = gw.market.north
            pki = north.config.tls.cert.parent
            if (pki / "ams-signing.key").exists():
                await north.started()
                return north, pki
            self.note = "the gateway's PKI has no AMS signing key: own northbound used"
        else:
            self.note = "the gateway has no north section: own northbound used"
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mgms-north-")))
        pki = state / "certs"
        init_dev_pki(pki)
        # nothing is sent to the AMS in this run: its URL is never used
        config = dev_north_config(pki, ams_url="https://127.0.0.1:9", port=0)
        own = North(config, microgrid=gw.config.gateway.microgrid.id, state_dir=state)
        records = await stack.enter_async_context(FlexRecords(state / "flex.sqlite"))
        publisher = NorthPublisher(own.send, sender=config.identity, microgrid=own.microgrid)
        flex = FlexService(gw.config, gw.table, gw.controller, records, publisher, gw.store)
        own.handler = FlexReserveHandler(flex)
        await stack.enter_async_context(own)
        task = asyncio.create_task(own.run(), name="hostile-north")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        stack.push_async_callback(stop)
        await asyncio.wait_for(own.started(), 10)
        return own, pki

    def _answered_ok(self) -> int:
        tally = self.report.get("tally", {}).get("https", {})
        return sum(
            n for answers in tally.values() for answer, n in answers.items() if answer[:1] == "2"
        )

    def figures(self) -> dict[str, Any]:
        counts = self.report.get("counts", {})
        seconds = self.report.get("seconds", {}).get("https") or 0
        tried = int(counts.get("https", 0))
        return {
            "tried": tried,
            "applied": self.applied,
            "unexpected": self.report.get("bad"),
            "per_s": round(tried / seconds, 1) if seconds else None,
            "answers": self.report.get("tally", {}).get("https", {}),
            "first_unexpected": self.report.get("unexpected", [])[:5],
            **({"note": self.note} if self.note else {}),
        }


def _held(state: Path, ids: set[str]) -> int:
    """Hostile message ids the gateway answered 2xx (inbound ledger) or holds as accepted
    (flexibility records)."""
    if not ids:
        return 0
    checks = [
        (state / "north-inbound.sqlite", "SELECT message_id FROM inbound WHERE status < 300"),
        (state / "flex.sqlite", "SELECT id FROM flex_reservation WHERE status != 'refused'"),
        (state / "flex.sqlite", "SELECT id FROM flex_activation WHERE status != 'refused'"),
    ]
    held = 0
    for path, sql in checks:
        if not path.exists():
            continue
        with read_only(path, "state file") as db:
            held += sum(1 for (i,) in db.execute(sql) if i in ids)
    return held
