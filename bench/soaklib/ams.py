"""The AMS side of the soak (bench/soak.py), in its own process: the AMS simulator that
receives the gateway's forecasts and verifications over mutual TLS, and the clients that
send the gateway signed Reserve Notifications, Reserve Activations and Smart API reads.

Its own process so that the load's signing and parsing do not run on the gateway's event
loop (nor in its memory figures). It speaks JSON lines: prints `{"ready": port}` once it
listens, answers every command read from stdin with one line `{"op": ..., ...}` when that
command is done (commands run concurrently) and exits at the end of its input.

Commands:
- `{"op": "reserve", "share": s, "after": t, "intervals": n}`: waits for a forecast and
  reserves `share` of the flexibility it offers from the next interval (or the first
  interval starting at or after unix time `t`, when given) to its end (or for `n`
  intervals, when given); reservations accumulate, so the load renews them as time goes
  on (bench/soaklib/market.py books the next before the last ends);
- `{"op": "calm", "until": t}`: one activation at a time, a few a second, until unix time
  `t` (the latency without load);
- `{"op": "activations", "until": t, "rate": r, "clients": n}`: activations at `r` per
  second from `n` clients, each on its own keep-alive connection, until unix time `t`;
- `{"op": "reads", "until": t, "rate": r, "clients": n, "ders": [...]}`: Smart API reads
  of one DER each, in turn, the same way;
- `{"op": "received"}`: the ids of the forecasts and verifications received.

Every activation supersedes the one before in the same reservation (a new id each time,
`start` now, until the reservation ends): what the flexibility service accepts as a
stream of set point updates, each dispatched and written to the devices at once. Each
belongs to the reservation in force now (the latest one that has started), so when one
reservation ends the next activation is the first of its successor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from gateway.demo_market import _from_next_interval
from gateway.north.ams_sim import AmsSimConfig, AmsSimulator
from gateway.north.tls import client_context
from gateway.north.wire import TURTLE, Channel
from gateway.smartapi.access import ACCESS_PATH
from gateway.smartapi.encode import der_iri
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ReserveActivation,
    ReserveNotification,
)
from gateway.smartapi.messages import (
    Activity,
    Entity,
    Method,
    Request,
    new_message_id,
)

ROOT = Path(__file__).resolve().parents[2]

REQUEST_TIMEOUT_S = 30.0
CALM_GAP_S = 0.25
#: no activation goes out this close to the end of a reservation another follows
HANDOVER_S = 5.0
#: a refusal's reason code and text, from the Smart API Error ("<reason>: <detail>")
REASON = re.compile(rb'errorMessage "([a-z-]+): ([^"]{0,300})')


@dataclass
class Tally:
    """What a load's requests got: latencies of the answered, statuses, refusal reasons."""

    latency_s: list[float] = field(default_factory=list)
    status: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    #: seconds of each accepted one, in the order of `accepted`
    accepted_s: list[float] = field(default_factory=list)
    sent: int = 0
    #: slots not sent (an activation in a reservation's hand-over)
    skipped: int = 0
    started: float = 0.0
    ended: float = 0.0

    def answered(self, message_id: str, status: int, body: bytes, seconds: float) -> None:
        self.latency_s.append(seconds)
        self.status[status] = self.status.get(status, 0) + 1
        if status == 200:
            self.accepted.append(message_id)
            self.accepted_s.append(seconds)
            return
        found = REASON.search(body)
        reason = found.group(1).decode() if found else f"http-{status}"
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.examples) < 5:
            text = found.group(2) if found else body[:300]
            self.examples.append(f"{status} {reason}: {text.decode(errors='replace')}")

    def failed(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.failures[name] = self.failures.get(name, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"{name}: {exc}")

    def report(self) -> dict[str, Any]:
        elapsed = max(self.ended - self.started, 1e-9)
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "elapsed_s": round(elapsed, 2),
            "latency_s": self.latency_s,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "reasons": self.reasons,
            "failures": self.failures,
            "examples": self.examples,
            "accepted_ids": self.accepted,
            "accepted_latency_s": self.accepted_s,
        }


class Load:
    """The AMS's clients and the reservation the activations belong to."""

    def __init__(self, ams: AmsSimulator, gateway_url: str) -> None:
        self.ams = ams
        self.gateway_url = gateway_url.rstrip("/")
        #: accepted reservations, oldest first, each with the forecast it was bought from
        self.reserved: list[tuple[ReserveNotification, FlexibilityForecast]] = []
        self.count = 0

    def session(self) -> aiohttp.ClientSession:
        """One client: a single keep-alive TLS connection with the AMS's certificate."""
        ssl = client_context(self.ams.config.tls)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(ssl=ssl, limit=1)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def post(
        self, session: aiohttp.ClientSession, path: str, message_id: str, body: bytes, tally: Tally
    ) -> None:
        tally.sent += 1
        started = time.perf_counter()
        try:
            async with session.post(
                f"{self.gateway_url}{path}", data=body, headers={"Content-Type": TURTLE}
            ) as resp:
                answer = await resp.read()
                tally.answered(message_id, resp.status, answer, time.perf_counter() - started)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.failed(exc)

    # -- reservation ------------------------------------------------------------------------

    async def reserve(
        self, share: float, after: float | None = None, intervals: int | None = None
    ) -> dict[str, Any]:
        seen = len(self.ams.messages(Channel.FORECAST))
        received = await self.ams.next_message(Channel.FORECAST, after=max(seen - 1, 0))
        assert isinstance(received, FlexibilityForecast)
        forecast = _from_next_interval(received)
        if after is not None:
            forecast = _from(forecast, datetime.fromtimestamp(after, UTC))
        notification = self.ams.notification_for(forecast, share=share, intervals=intervals)
        sent = await self.ams.send(notification)
        if sent.answer.ok:
            self.reserved.append((notification, forecast))
        end = notification.interval_start(len(notification.intervals))
        return {
            "id": notification.id,
            "status": sent.answer.status,
            "answer": "" if sent.answer.ok else _reason(sent.answer.body),
            "start": notification.start.timestamp(),
            "end": end.timestamp(),
            "intervals": len(notification.intervals),
        }

    def in_force(self, now: datetime) -> tuple[ReserveNotification, FlexibilityForecast]:
        """The reservation activations belong to now: the latest that has started (the
        first before any has)."""
        assert self.reserved, "activations before a reservation"
        started = [r for r in self.reserved if r[0].start <= now]
        return started[-1] if started else self.reserved[0]

    def baseline(self, now: datetime, bought_from: FlexibilityForecast) -> tuple[float, float]:
        """P and Q of the gateway's latest forecast for the interval now (the baseline the
        AMS knows)."""
        for f in reversed(self.ams.messages(Channel.FORECAST)):
            assert isinstance(f, FlexibilityForecast)
            i = int((now - f.start) / f.step)
            if 0 <= i < len(f.intervals):
                return f.intervals[i].p_kw, f.intervals[i].q_kvar
        f = bought_from
        i = min(max(int((now - f.start) / f.step), 0), len(f.intervals) - 1)
        return f.intervals[i].p_kw, f.intervals[i].q_kvar

    def activation(self) -> tuple[str, bytes] | None:
        """The next set point: a slow swing through 20..80 % of the band reserved in the
        interval now around the latest baseline, in the direction with the larger band.
        None in the last `HANDOVER_S` of a reservation another follows: one sent then would
        be decided after its period ended (refused as outside the window), one for the next
        before the running one ended (refused as conflicting with it)."""
        now = datetime.now(UTC)
        n, bought_from = self.in_force(now)
        end = n.interval_start(len(n.intervals))
        if self.reserved[-1][0] is not n and end - now < timedelta(seconds=HANDOVER_S):
            return None
        i = min(max(int((now - n.start) / n.step), 0), len(n.intervals) - 1)
        band = n.intervals[i]
        p_base, q_base = self.baseline(now, bought_from)
        self.count += 1
        share = 0.5 + 0.3 * math.sin(2 * math.pi * self.count / 40)
        if band.p_lower_kw >= band.p_raise_kw:
            p = p_base - share * band.p_lower_kw
        else:
            p = p_base + share * band.p_raise_kw
        message = ReserveActivation(
            id=new_message_id(),
            sender=self.ams.config.identity,
            generated_at=now,
            microgrid=n.microgrid,
            notification=n.id,
            p_kw=p,
            q_kvar=q_base,
            start=now,
            end=n.interval_start(len(n.intervals)),
        )
        return message.id, self.ams.encode(message)

    def read(self, der: str) -> tuple[str, bytes]:
        request = Request(
            id=new_message_id(),
            sender=self.ams.config.identity,
            generated_at=datetime.now(UTC),
            activities=(
                Activity(
                    method=Method.READ,
                    entities=(Entity(iri=der_iri(self.ams.config.microgrid, der)),),
                ),
            ),
        )
        return request.id, self.ams.encode(request)

    # -- loads ------------------------------------------------------------------------------

    async def calm(self, until: float) -> dict[str, Any]:
        tally = Tally(started=time.time())
        async with self.session() as session:
            while time.time() < until:
                made = self.activation()
                if made is not None:
                    await self.post(session, Channel.ACTIVATION.path, *made, tally)
                await asyncio.sleep(CALM_GAP_S)
        tally.ended = time.time()
        return tally.report()

    async def paced(self, until: float, rate: float, clients: int, path: str, make: Any) -> Tally:
        """`clients` clients share one schedule of `rate` requests a second; a client that
        falls behind sends at once (the rate achieved says whether the gateway kept up)."""
        tally = Tally(started=time.time())
        t0 = time.monotonic()
        next_slot = 0

        async def client() -> None:
            nonlocal next_slot
            async with self.session() as session:
                while True:
                    slot = next_slot
                    next_slot += 1
                    at = t0 + slot / rate
                    now = time.time()
                    if now >= until or now + (at - time.monotonic()) >= until:
                        return
                    await asyncio.sleep(max(0.0, at - time.monotonic()))
                    made = make(slot)
                    if made is None:  # a pause: the slots it covers are not made up for
                        tally.skipped += 1
                        await asyncio.sleep(HANDOVER_S / 10)
                        continue
                    await self.post(session, path, *made, tally)

        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(client())
        tally.ended = time.time()
        return tally

    async def activations(self, until: float, rate: float, clients: int) -> dict[str, Any]:
        tally = await self.paced(
            until, rate, clients, Channel.ACTIVATION.path, lambda _: self.activation()
        )
        return tally.report()

    async def reads(
        self, until: float, rate: float, clients: int, ders: list[str]
    ) -> dict[str, Any]:
        tally = await self.paced(
            until, rate, clients, ACCESS_PATH, lambda slot: self.read(ders[slot % len(ders)])
        )
        report = tally.report()
        report.pop("accepted_ids")
        report.pop("accepted_latency_s")
        return report

    def received(self) -> dict[str, Any]:
        assert self.ams.pipeline is not None
        return {
            "forecast": [m.id for m in self.ams.messages(Channel.FORECAST)],
            "verification": [m.id for m in self.ams.messages(Channel.VERIFICATION)],
            "repeats": self.ams.pipeline.counts.get("repeat", 0),
            "refused": {
                k: v for k, v in self.ams.pipeline.counts.items() if k not in ("accepted", "repeat")
            },
        }


def _reason(body: bytes) -> str:
    """A refusal's reason and text (or the start of the body)."""
    found = REASON.search(body)
    return (found.group(0) if found else body[:400]).decode(errors="replace")


def _from(forecast: FlexibilityForecast, at: datetime) -> FlexibilityForecast:
    """The forecast from its first interval starting at or after `at`."""
    skip = max(math.ceil((at - forecast.start) / forecast.step - 1e-9), 0)
    if skip >= len(forecast.intervals):
        ends = forecast.interval_start(len(forecast.intervals))
        raise ValueError(f"the forecast ends at {ends:%H:%M:%S}, before {at:%H:%M:%S}")
    return replace(
        forecast,
        start=forecast.start + skip * forecast.step,
        intervals=forecast.intervals[skip:],
    )


async def command(load: Load, line: str) -> dict[str, Any]:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "reserve":
        return await load.reserve(cmd["share"], cmd.get("after"), cmd.get("intervals"))
    if op == "calm":
        return await load.calm(cmd["until"])
    if op == "activations":
        return await load.activations(cmd["until"], cmd["rate"], cmd["clients"])
    if op == "reads":
        return await load.reads(cmd["until"], cmd["rate"], cmd["clients"], cmd["ders"])
    if op == "received":
        return load.received()
    raise ValueError(f"unknown command {op!r}")


def reply(op: str, result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"op": op, **result}) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    config = AmsSimConfig.dev(
        args.pki,
        microgrid=args.microgrid,
        state_dir=args.state,
        gateway_url=args.gateway_url,
        port=args.port,
    )
    args.state.mkdir(parents=True, exist_ok=True)
    async with AmsSimulator(config) as ams:
        server = asyncio.create_task(ams.run(), name="ams-sim")
        try:
            port = await asyncio.wait_for(ams.ready(), 30)
            load = Load(ams, args.gateway_url)
            reply("ready", {"port": port})
            pending: set[asyncio.Task[None]] = set()

            async def run(line: str) -> None:
                op = json.loads(line)["op"]
                try:
                    result = await command(load, line)
                except Exception as exc:  # the parent reads the failure from the answer  # noqa: BLE001
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                reply(op, result)

            while line := await asyncio.to_thread(sys.stdin.readline):
                task = asyncio.create_task(run(line))
                pending.add(task)
                task.add_done_callback(pending.discard)
            for task in list(pending):
                task.cancel()
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--microgrid", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gateway-url", required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
