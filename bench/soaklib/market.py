"""The soak's northbound and flexibility loads (bench/soak.py): the gateway gets a `north:`
and `flex:` section as `mgms demo` gives it (development PKI, 10-second intervals) and an
AMS on loopback, which runs in its own process (bench/soaklib/ams.py) with the load clients.

Parts:
- `ActivationLoad` ("activation"): a reservation set up by a Reserve Notification, then
  signed Reserve Activations over mutual-TLS HTTPS, one at a time in the calm phase and at
  a sustained rate from several keep-alive clients under faults. A reservation covers the
  forecast's horizon (15 minutes of 10-second intervals) or `reservation_s`; while the load
  runs, the next one is booked `renew_before_s` before the last ends, from its end on, so
  the activations run as long as the soak does (`reservations` lists them). Every answered
  activation
  is looked up afterwards in the flexibility records and in the controller's write events:
  `applied` counts those recorded as accepted (or curtailed) whose coupling-point set point
  was put in force by a control cycle, `lost` those answered 200 that were not (must be 0);
  `applied_with_device_writes` those for which the controller sent at least one DER set
  point (the others found every DER within the set point deadband of what it already had,
  or its device down); `records_vs_controller` counts set point writes one side has and
  the other has not (must be 0).
- `SmartApiReads` ("read"): Smart API reads of one DER each at the access endpoint.
And `north_messages`: the forecasts and verifications the gateway queued against what the
AMS received (lost and duplicated must be 0; `pending_at_stop` are still in the durable
outbox when the gateway stopped, delivered at its next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.soaklib.figures import percentiles
from fwsim.process import free_port
from gateway.app import Gateway
from gateway.config import LoadedConfig
from gateway.flex.cycle import DEMO_SETTINGS
from gateway.north.certs import dev_north_config, init_dev_pki
from gateway.north.service import OUTBOX_FILE
from gateway.sqlite import read_only

ROOT = Path(__file__).resolve().parents[2]
#: share of the offered flexibility the AMS reserves
RESERVED_SHARE = 0.5
READY_WITHIN_S = 30.0
#: answers of a command arrive after its deadline plus this at the latest
ANSWER_MARGIN_S = 120.0
FLEX_RECORDS = "flex.sqlite"
#: refusals the soak's field explains: every device runs its own simulator process (so
#: each can be killed alone), each with its own physics, so the coupling-point meter never
#: sees the DERs move; the closed loop drives them to their limits, after which a set point
#: further from the baseline cannot be reached and is refused as it should be (the same
#: when the DERs that would carry it are down). The reason code is that of the first
#: reason: `outside-band` when the set point was also beyond the band (clamped to its edge
#: first), which alone never refuses an activation (gateway.flex.conflict.check_activation)
EXPLAINED_REFUSALS = frozenset({"insufficient-flexibility", "outside-band"})


def with_market(config: LoadedConfig, state: Path) -> tuple[Path, int, int]:
    """Give `config` the demo's north and flex sections; (PKI directory, AMS port, gateway
    port)."""
    pki = state / "certs"
    init_dev_pki(pki)
    ams_port, gateway_port = free_port(), free_port()
    config.gateway.north = dev_north_config(
        pki, ams_url=f"https://127.0.0.1:{ams_port}", port=gateway_port
    )
    config.gateway.flex = DEMO_SETTINGS
    return pki, ams_port, gateway_port


class AmsLink:
    """The AMS process: started with `start()`, commanded with `call()`."""

    def __init__(
        self,
        config: LoadedConfig,
        state: Path,
        pki: Path,
        ams_port: int,
        prefix: Sequence[str] = (),
    ) -> None:
        #: runs the process under a wrapper (`nice -n 10`: see bench/latency.py)
        self.prefix = list(prefix)
        north = config.gateway.north
        assert north is not None and north.server is not None
        self.args = [
            "--pki",
            str(pki),
            "--state",
            str(state / "ams"),
            "--microgrid",
            config.gateway.microgrid.id,
            "--port",
            str(ams_port),
            "--gateway-url",
            f"https://127.0.0.1:{north.server.port}",
        ]
        self.proc: asyncio.subprocess.Process | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'firmware-sim'}"}
        self.proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            sys.executable,
            "-m",
            "bench.soaklib.ams",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 26,
        )
        ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting["ready"] = ready
        self._reader = asyncio.create_task(self._read(), name="ams-link")
        await asyncio.wait_for(ready, READY_WITHIN_S)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            answer = json.loads(line)
            waiter = self._waiting.pop(answer.pop("op"), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(RuntimeError("the AMS process ended"))

    async def call(self, op: str, within: float, **args: Any) -> dict[str, Any]:
        """Run a command (one of each `op` at a time) and return its answer."""
        assert self.proc is not None and self.proc.stdin is not None
        assert op not in self._waiting, f"{op} already running"
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[op] = answer
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        result = await asyncio.wait_for(answer, within)
        if "error" in result:
            raise RuntimeError(f"AMS {op}: {result['error']}")
        return result

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            await self._reader


def _unix(loop_deadline: float) -> float:
    """A loop-time deadline as unix time (the AMS process has its own loop clock)."""
    return time.time() + (loop_deadline - asyncio.get_running_loop().time())


#: the next reservation is booked this long before the last one ends
RENEW_BEFORE_S = 120.0
#: the smallest share a refused renewal is tried again with
MIN_RENEWED_SHARE = 0.05


class ActivationLoad:
    name = "activation"

    def __init__(
        self,
        link: AmsLink,
        state: Path,
        store: Path,
        rate: float,
        clients: int,
        reservation_s: float | None = None,
        renew_before_s: float = RENEW_BEFORE_S,
    ) -> None:
        self.link = link
        self.records = state / FLEX_RECORDS
        self.store = store
        self.rate = rate
        self.clients = clients
        self.reservation_s = reservation_s
        self.renew_before_s = renew_before_s
        self.reservations: list[dict[str, Any]] = []
        self.renewals_refused: list[str] = []
        self.calm_report: dict[str, Any] = {}
        self.load_report: dict[str, Any] = {}

    async def _reserve(
        self, after: float | None = None, share: float = RESERVED_SHARE
    ) -> dict[str, Any]:
        """Book a reservation (from the first interval starting at `after` on, when given)."""
        intervals = None
        if self.reservation_s is not None:
            intervals = max(1, round(self.reservation_s / DEMO_SETTINGS.interval_s))
        booked = await self.link.call(
            "reserve", ANSWER_MARGIN_S, share=share, after=after, intervals=intervals
        )
        if booked["status"] != 200:
            raise RuntimeError(f"reservation refused: {booked['answer']}")
        self.reservations.append({**booked, "share": share})
        return booked

    async def prepare(self, gw: Gateway, deadline: float) -> None:
        """In the calm phase: the reservation, then activations one at a time."""
        first = await self._reserve()
        await asyncio.sleep(max(0.0, first["start"] - time.time()))
        until = max(_unix(deadline), time.time() + 2.0)
        if until > first["end"]:
            raise RuntimeError("the calm phase outlasts the first reservation")
        self.calm_report = await self.link.call(
            "calm", until - time.time() + ANSWER_MARGIN_S, until=until
        )

    async def _renew(self, until: float) -> None:
        """Book the next reservation before the last ends, until one covers `until`."""
        while self.reservations[-1]["end"] < until:
            last_end = self.reservations[-1]["end"]
            await asyncio.sleep(max(0.0, last_end - self.renew_before_s - time.time()))
            # the field under faults may offer less than the forecast said by then (its
            # DERs driven to their limits): a refused renewal is tried again on the next
            # forecast with a smaller share, as an AMS would buy what is on offer
            share = RESERVED_SHARE
            while True:
                try:
                    await self._reserve(after=last_end, share=share)
                    break
                except RuntimeError as exc:
                    self.renewals_refused.append(str(exc)[:300])
                    if time.time() >= last_end:
                        raise RuntimeError(
                            f"no reservation after {len(self.renewals_refused)} tries"
                        ) from exc
                    share = max(share / 2, MIN_RENEWED_SHARE)

    async def run(self, gw: Gateway, deadline: float) -> None:
        until = _unix(deadline)
        within = deadline - asyncio.get_running_loop().time() + ANSWER_MARGIN_S
        async with asyncio.TaskGroup() as group:
            group.create_task(self._renew(until), name="soak-activation-renew")
            load = group.create_task(
                self.link.call(
                    "activations", within, until=until, rate=self.rate, clients=self.clients
                )
            )
        self.load_report = load.result()

    def figures(self) -> dict[str, Any]:
        """After the gateway stopped: the answers against the records and the controller."""
        calm, load = self.calm_report, self.load_report
        answered = [*calm.get("accepted_ids", []), *load.get("accepted_ids", [])]
        check = cross_check(self.records, self.store, answered)
        status = Counter(load.get("status", {}))
        refused = sum(n for code, n in status.items() if code != "200")
        calm_ms = percentiles(calm.get("latency_s", []))
        load_ms = percentiles(load.get("latency_s", []))
        ratio = None
        if "p50" in calm_ms and "p50" in load_ms:
            ratio = round(load_ms["p50"] / calm_ms["p50"], 1)
        return {
            "target_rate": self.rate,
            "clients": self.clients,
            "reservations": [
                {k: r[k] for k in ("id", "start", "end", "intervals", "share")}
                for r in self.reservations
            ],
            "renewals_refused": self.renewals_refused[:5],
            "renewals_refused_count": len(self.renewals_refused),
            "sent": load.get("sent", 0),
            "skipped_in_handover": load.get("skipped", 0),
            "achieved_rate": round(status["200"] / load["elapsed_s"], 1) if load else 0.0,
            "accepted": status["200"],
            "refused": refused,
            "refusal_reasons": load.get("reasons", {}),
            "client_failures": load.get("failures", {}),
            "examples": load.get("examples", []),
            "latency_ms_calm": calm_ms,
            "latency_ms_load": load_ms,
            "p50_load_over_calm": ratio,
            **check,
        }


def cross_check(records: Path, store: Path, answered: list[str]) -> dict[str, Any]:
    """Activations answered 200 against the flexibility records and the controller's
    write events (origin `flex:<activation id>`)."""
    with read_only(records, "flexibility records") as conn:
        decided = dict(conn.execute("SELECT id, status FROM flex_activation").fetchall())
        in_force = {a for (a,) in conn.execute("SELECT activation_id FROM flex_pcc_setpoint")}
        recorded_writes = Counter(
            (a, p, s)
            for a, p, s in conn.execute("SELECT activation_id, point, status FROM flex_setpoint")
        )
    controller_writes: Counter[tuple[str, str, str]] = Counter()
    with read_only(store, "store") as conn:
        for point, detail in conn.execute("SELECT point, detail FROM events WHERE kind='write'"):
            d = json.loads(detail)
            origin = str(d.get("origin", ""))
            if origin.startswith("flex:"):
                controller_writes[(origin.removeprefix("flex:"), point, d["status"])] += 1
    written = {a for a, _, s in controller_writes if s == "confirmed"}
    statuses = Counter(decided.get(a, "missing") for a in answered)
    applied = [a for a in answered if decided.get(a) in ("accepted", "curtailed") and a in in_force]
    mismatch = (recorded_writes - controller_writes) + (controller_writes - recorded_writes)
    return {
        "recorded": dict(statuses),
        "applied": len(applied),
        "lost": len(answered) - len(applied),
        "applied_with_device_writes": len(written & set(applied)),
        "records_vs_controller": sum(mismatch.values()),
        "writes_confirmed": sum(
            n for (_, _, s), n in controller_writes.items() if s == "confirmed"
        ),
        "writes_failed": sum(n for (_, _, s), n in controller_writes.items() if s != "confirmed"),
    }


class SmartApiReads:
    name = "read"

    def __init__(self, link: AmsLink, ders: list[str], rate: float, clients: int) -> None:
        self.link = link
        self.ders = ders
        self.rate = rate
        self.clients = clients
        self.report: dict[str, Any] = {}

    async def run(self, gw: Gateway, deadline: float) -> None:
        self.report = await self.link.call(
            "reads",
            deadline - asyncio.get_running_loop().time() + ANSWER_MARGIN_S,
            until=_unix(deadline),
            rate=self.rate,
            clients=self.clients,
            ders=self.ders,
        )

    def figures(self) -> dict[str, Any]:
        r = self.report
        status = Counter(r.get("status", {}))
        errors = sum(n for code, n in status.items() if code != "200")
        errors += sum(r.get("failures", {}).values())
        return {
            "target_rate": self.rate,
            "clients": self.clients,
            "sent": r.get("sent", 0),
            "answered_ok": status["200"],
            "achieved_rate": round(status["200"] / r["elapsed_s"], 1) if r else 0.0,
            "errors": errors,
            "examples": r.get("examples", []),
            "latency_ms": percentiles(r.get("latency_s", [])),
        }


async def drain_outbox(gw: Gateway, within: float) -> None:
    """Wait until the outbox holds nothing undelivered (or `within` seconds passed)."""
    assert gw.market is not None
    for _ in range(int(within / 0.2)):
        if not (await gw.market.north.outbox.stats()).pending:
            return
        await asyncio.sleep(0.2)


def north_messages(state: Path, received: dict[str, Any]) -> dict[str, Any]:
    """Forecasts and verifications the gateway queued (its outbox file, after it stopped)
    against what the AMS received."""
    with read_only(state / OUTBOX_FILE, "outbox") as conn:
        rows = conn.execute("SELECT message_id, destination, state FROM outbox").fetchall()
    out: dict[str, Any] = {}
    lost_total = 0
    for channel in ("forecast", "verification"):
        queued = {m: s for m, d, s in rows if d == channel}
        got = received[channel]
        pending = {m for m, s in queued.items() if s == "pending"}
        lost = set(queued) - set(got) - pending
        lost_total += len(lost)
        out[channel] = {
            "queued": len(queued),
            "received": len(set(got)),
            "duplicated": len(got) - len(set(got)),
            "unknown": len(set(got) - set(queued)),
            "lost": len(lost),
            "pending_at_stop": len(pending),
        }
    duplicated = received["repeats"] + sum(c["duplicated"] for c in out.values())
    out["lost"] = lost_total
    out["duplicated"] = duplicated
    out["ams_refused"] = received["refused"]
    return out
