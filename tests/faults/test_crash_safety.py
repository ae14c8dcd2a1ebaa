"""The gateway SIGKILLed at points of a CRP cycle and restarted on the same state directory.

The gateway (`mgms run` with `north:` and `flex:`) and the field simulators run in their
own processes; the AMS simulator drives the cycle over HTTPS with mutual TLS through a
proxy that can refuse or slow it. Kill points (phases):

- `notified`: right after the Reserve Notification was answered; the AMS repeats it;
- `activating`: while the activation is applied and its set points go out (the answer
  may never arrive); the AMS repeats it until the restarting gateway answers;
- `activated`: right after the activation was answered; the AMS repeats it;
- `outage`: after that kill the gateway stays dead for the whole first interval;
- `controlling`: during the activation, while set points follow the coupling point;
- `outbox`: while verifications wait in the outbox (the AMS refuses connections, then
  comes back slow);
- `verifying`: around the end of the activation, while the final verification is built.

`make test` runs one cycle with five kills; `MGMS_LONG_FAULTS=1` adds LONG_CYCLES cycles
killed at random choices of phases. The offsets inside each phase are random from a seed,
printed with the outcome and in every failure (`MGMS_CRASH_SEED=N` replays it;
`MGMS_CRASH_PLAN="notified,activating;controlling"` runs chosen cycles).

After each cycle, checked through the state files and the simulators: one record and one
decision per notification and activation however often it was sent, a repeat answered
with the first answer byte for byte, the activation closed with a note of the restart,
every set point a device holds recorded as written last (and, right after each kill,
any set point on a device without its record is reported), the verification's measured
power that of the meter read independently, the set point asked counted in every
interval (a dead interval is not claimed as delivered), and at the end every outbox
message delivered once and in queue order.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.demo_market import RESERVED_SHARE
from gateway.errors import DeliveryError
from gateway.flex.messages import _missing, _token
from gateway.north.wire import TURTLE, Answer, Channel
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
    ReserveActivation,
    ReserveNotification,
    ReserveVerification,
)
from tests.faults.field import LONG
from tests.faults.market_rig import SETPOINT_TOL, SETPOINTS, Rig, market_rig
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.waiting import until

pytestmark = pytest.mark.integration

PHASES = ("notified", "activating", "activated", "outage", "controlling", "outbox", "verifying")
#: reserved and activated intervals per cycle: one for an outage, one for a restart and
#: the kills inside it, one verified from the meter's counters across a kill
INTERVALS = 3
#: how long before its start an activation is sent when the gateway dies before it begins
LEAD_S = 2.0
#: the quick run: one cycle, five kills (one followed by an outage of a whole interval, one
#: with the AMS refusing connections)
QUICK = ("notified", "activating", "outage", "controlling", "outbox", "verifying")
LONG_CYCLES = 8
#: activation decisions that put it in force (curtailed: clamped to the reserved band)
APPLIED = ("accepted", "curtailed")
#: how the verification shows an interval without measurement
MISSING = _missing()
#: the verification's measured power against the meter read by the witness
MEASURED_TOL_KW = 1.5
#: the gateway verifies an interval this long after it ended (gateway.flex.service)
VERIFY_DELAY_S = 3.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def seed() -> int:
    return int(os.environ.get("MGMS_CRASH_SEED") or random.SystemRandom().randrange(10**6))


@dataclass
class Cycle:
    """What one cycle did, for the checks and the failure messages."""

    kills: tuple[str, ...]
    notification: ReserveNotification | None = None
    activation: ReserveActivation | None = None
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)
    #: per verified interval: what the gateway claimed against what the meter measured
    verdicts: list[dict[str, Any]] = field(default_factory=list)


async def _post(rig: Rig, channel: Channel, body: bytes) -> Answer | None:
    try:
        return await rig.ams.post(channel, body, TURTLE)
    except DeliveryError:
        return None


async def _repeat(rig: Rig, channel: Channel, body: bytes) -> Answer:
    """The AMS repeats a message until the restarting gateway answers (every 50 ms)."""
    async with asyncio.timeout(30):
        while (answer := await _post(rig, channel, body)) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return answer


def _from(forecast: FlexibilityForecast, earliest: datetime) -> FlexibilityForecast:
    """The forecast from its first interval that starts at `earliest` or later."""
    skip = 0
    while forecast.start + skip * forecast.step < earliest:
        skip += 1
    return replace(
        forecast,
        start=forecast.start + skip * forecast.step,
        intervals=forecast.intervals[skip:],
    )


async def _sleep_until(t: datetime) -> None:
    await asyncio.sleep(max((t - datetime.now(UTC)).total_seconds(), 0.0))


async def run_cycle(rig: Rig, kills: tuple[str, ...], rng: random.Random) -> Cycle:
    """One CRP cycle with the gateway killed at `kills`; the AMS repeats what it did not
    see answered, or what was answered just before a kill."""
    cycle = Cycle(kills)
    # the first cycle takes the forecast the gateway sent at its start, later ones a fresh
    # forecast (the flexibility left after the last cycle)
    seen = max(len(rig.ams.messages(Channel.FORECAST)) - (0 if rig.kills else 1), 0)
    received = await asyncio.wait_for(
        rig.ams.next_message(Channel.FORECAST, after=seen), timeout=30
    )
    assert isinstance(received, FlexibilityForecast)
    forecast = _from(received, datetime.now(UTC) + timedelta(seconds=LEAD_S + 2.0))
    notification = rig.ams.notification_for(forecast, share=RESERVED_SHARE, intervals=INTERVALS)
    cycle.notification = notification
    body = rig.ams.encode(notification)
    answers = cycle.answers.setdefault("notification", [])
    first = await _post(rig, Channel.NOTIFICATION, body)
    assert first is not None
    answers.append(first)
    if "notified" in kills:
        await rig.kill_and_restart("notified", ready=False)
        repeat = await _repeat(rig, Channel.NOTIFICATION, body)
        assert repeat is not None
        answers.append(repeat)
        await rig.gateway.wait_ready()

    one = rig.ams.activation_for(
        notification, forecast, fraction=1.0, direction="down", start=notification.start
    )
    # the whole reserved period: a kill lands inside the activation more often
    activation = replace(one, end=notification.interval_start(len(notification.intervals)))
    cycle.activation = activation
    outage = None
    if "outage" in kills:
        # the gateway stays dead for the whole first interval: killed while it applies
        # the activation at its start, or (`activated`) right after it answered an
        # activation sent ahead of its start, so no set point went out
        outage = notification.interval_start(1) + timedelta(seconds=0.5)
    early = "outage" in kills and "activating" not in kills
    await _sleep_until(activation.start - timedelta(seconds=LEAD_S if early else 0.0))
    body = rig.ams.encode(activation)
    answers = cycle.answers.setdefault("activation", [])
    if "activating" in kills:
        sending = asyncio.create_task(_post(rig, Channel.ACTIVATION, body))
        cycle.offsets["activating"] = offset = rng.uniform(0.0, 0.3)
        await asyncio.sleep(offset)
        await rig.kill_and_restart("activating", outage, ready=False)
        got = await sending
        if got is not None:
            answers.append(got)
        repeat = await _repeat(rig, Channel.ACTIVATION, body)
        answers.append(repeat)
        await rig.gateway.wait_ready()
    else:
        got = await _post(rig, Channel.ACTIVATION, body)
        assert got is not None
        answers.append(got)
        if "activated" in kills:
            await rig.kill_and_restart("activated", outage, ready=False)
            answers.append(await _repeat(rig, Channel.ACTIVATION, body))
            await rig.gateway.wait_ready()
    assert answers[-1].status == 200, answers[-1].body.decode(errors="replace")
    start = max(activation.start, datetime.now(UTC))
    end = activation.end
    assert end is not None

    if "controlling" in kills:
        left = (end - start).total_seconds()
        cycle.offsets["controlling"] = offset = rng.uniform(0.5, max(0.6, min(8.0, left / 2)))
        await _sleep_until(start + timedelta(seconds=offset))
        await rig.kill_and_restart("controlling")
    if "outbox" in kills:
        # the AMS goes away before the next interval's verification is due; the gateway
        # dies with it queued and comes back to an AMS that is still away, then slow
        now = datetime.now(UTC)
        bounds = [notification.interval_start(k) for k in range(len(notification.intervals) + 1)]
        boundary = min((t for t in bounds if t > now), default=end)
        await _sleep_until(max(boundary - timedelta(seconds=2), now))
        rig.ams_down()
        cycle.offsets["outbox"] = offset = rng.uniform(0.0, 1.5)
        await until(
            lambda: any(s == "pending" for _, d, s in rig.state.outbox() if d == "verification"),
            within=20,
        )
        await asyncio.sleep(offset)
        await rig.kill_and_restart("outbox")
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        rig.proxy.delay = rng.uniform(0.2, 1.0)
        rig.ams_up()
    if "verifying" in kills:
        cycle.offsets["verifying"] = offset = rng.uniform(-0.5, 1.0)
        await _sleep_until(end + timedelta(seconds=VERIFY_DELAY_S + offset))
        await rig.kill_and_restart("verifying")
    final = _token(f"{activation.id}.final")
    await until(lambda: final in rig.received(Channel.VERIFICATION), within=40)
    rig.proxy.delay = 0.0
    return cycle


def _outbox_agrees(rig: Rig) -> bool:
    rows = rig.state.outbox()
    return all(s == "delivered" for _, _, s in rows)


async def check_cycle(rig: Rig, cycle: Cycle, where: str) -> None:
    n, act = cycle.notification, cycle.activation
    assert n is not None and act is not None and act.end is not None
    # one record and one decision per message, however often it was sent
    assert rig.state.reservations().count((n.id, "accepted")) == 1, where
    assert [d for s, d in rig.state.audit("reservation") if s == n.id] == ["accepted"], where
    decisions = [d for s, d in rig.state.audit("activation") if s == act.id]
    assert len(decisions) == 1 and decisions[0] in APPLIED, (where, decisions)
    [(_, status, state, note)] = [r for r in rig.state.activations() if r[0] == act.id]
    assert status in APPLIED and state == "ended", (where, status, state, note)
    if {"activated", "controlling"} & set(cycle.kills):
        assert "restart" in note, (where, note)
    decided = rig.state.activation_p(act.id)
    # a repeat gets the first answer, byte for byte
    for kind, answers in cycle.answers.items():
        assert all(a.status == 200 for a in answers), (where, kind, answers)
        assert all(a.body == answers[0].body for a in answers), (where, kind)
    # the verification the AMS received: measured is what the meter measured
    final = _token(f"{act.id}.final")
    [v] = [m for m in rig.ams.messages(Channel.VERIFICATION) if m.id == final]
    assert isinstance(v, ReserveVerification)
    assert v.intervals, where
    rows = rig.state.verified(act.id)
    assert len(rows) == len(v.intervals), (where, rows)
    verdicts = cycle.verdicts
    for k, got in enumerate(v.intervals):
        a = max(v.start + k * v.step, act.start)
        b = min(v.start + (k + 1) * v.step, act.end)
        if got == MISSING:  # no measurement: nothing claimed
            verdicts.append({"interval": k, "measured": None})
            continue
        truth = rig.witness.mean_power(a, b)
        verdicts.append(
            {
                "interval": k,
                "measured": round(got.p_measured_kw, 2),
                "truth": round(truth, 2),
                "percent": round(got.p_percent, 1),
            }
        )
        assert got.p_measured_kw == pytest.approx(truth, abs=MEASURED_TOL_KW), (
            where,
            k,
            got,
            truth,
        )
        assert got.p_delivered_kw == pytest.approx(got.p_measured_kw - got.p_baseline_kw)
        # what was asked counts in every interval, the gateway alive or not
        asked = abs(decided - got.p_baseline_kw)
        assert abs(got.p_set_kw - decided) <= 0.25 * asked + 0.5, (where, k, got, decided)
    # what the devices hold is what the records say was written last
    await asyncio.sleep(2.0)
    devices = await rig.witness.read(SETPOINTS)
    recorded = rig.state.last_setpoints()
    for point, value in devices.items():
        if point in recorded:
            assert recorded[point][1] == "confirmed", (where, point, recorded[point])
            assert abs(recorded[point][0] - value) <= SETPOINT_TOL, (
                where,
                point,
                value,
                recorded[point],
            )


async def check_outbox(rig: Rig, where: str) -> None:
    """Every message queued was delivered once, in queue order per destination."""
    await until(lambda: _outbox_agrees(rig), within=30)
    rows = rig.state.outbox()
    for channel in (Channel.FORECAST, Channel.VERIFICATION):
        queued = [m for m, d, _ in rows if d == channel.value]
        got = rig.received(channel)
        assert len(got) == len(set(got)), (where, channel, "duplicates")
        assert got == queued, (where, channel, got, queued)


def summary(rig: Rig, cycles: list[Cycle], s: int, took: float) -> dict[str, Any]:
    return {
        "seed": s,
        "kills": rig.kills,
        "offsets": [c.offsets for c in cycles],
        "verified": [c.verdicts for c in cycles],
        "unrecorded_setpoints_after_kill": rig.unrecorded,
        "writes_cut_by_a_kill": rig.cut_writes,
        "seconds": round(took, 1),
    }


async def crash_run(tmp_path: Path, pki: PkiFiles, plans: list[tuple[str, ...]], s: int) -> None:
    rng = random.Random(s)
    started = time.monotonic()
    cycles: list[Cycle] = []
    async with market_rig(tmp_path, pki) as rig:
        try:
            for plan in plans:
                cycle = await run_cycle(rig, plan, rng)
                cycles.append(cycle)
                await check_cycle(rig, cycle, f"seed {s}, kills {plan}")
            await check_outbox(rig, f"seed {s}")
            assert not rig.unrecorded, "a device held a set point nobody recorded"
        except BaseException:
            print("crash safety failed:", summary(rig, cycles, s, time.monotonic() - started))
            print("gateway log:", rig.gateway.log)
            raise
        log = rig.gateway.log.read_text()
        assert "Traceback" not in log, log[-4000:]
        print("crash safety:", summary(rig, cycles, s, time.monotonic() - started))


def normalized(plan: tuple[str, ...]) -> tuple[str, ...]:
    """An outage follows a kill at the activation; `activating` and `activated` exclude
    each other."""
    kills = set(plan)
    if "activating" in kills:
        kills.discard("activated")
    elif "outage" in kills:
        kills.add("activated")
    return tuple(p for p in PHASES if p in kills)


def plans(s: int) -> list[tuple[str, ...]]:
    """The quick cycle; with MGMS_LONG_FAULTS=1 then more cycles, each killed at a random
    choice of phases."""
    given = os.environ.get("MGMS_CRASH_PLAN")
    if given:  # e.g. "notified,activating;controlling,verifying": one cycle per group
        return [normalized(tuple(g.split(","))) for g in given.split(";")]
    out = [QUICK]
    rng = random.Random(s ^ 0x5EED)
    for _ in range(LONG_CYCLES if LONG else 0):
        plan = tuple(p for p in PHASES if rng.random() < 0.5) or (rng.choice(PHASES),)
        out.append(normalized(plan))
    return out


@pytest.mark.timeout(150 + (80 * LONG_CYCLES if LONG else 0))
async def test_gateway_killed_at_points_of_crp_cycles(tmp_path: Path, pki: PkiFiles) -> None:
    s = seed()
    await crash_run(tmp_path, pki, plans(s), s)
