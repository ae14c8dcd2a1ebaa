"""A CRP cycle with a gateway that can be SIGKILLed: `mgms run` (acquisition, store, flex and
north) in its own process on a fixed state directory, the field simulator in another, the
AMS simulator on the test's event loop behind a TCP proxy (so the AMS can be made slow or
unreachable), and an independent witness that reads the coupling-point meter and the
devices' set-point registers over Modbus with the gateway's own driver.

Everything is checked through what persists: the flexibility records, the outbox and the
inbound ledger (SQLite files of the state directory), and what the AMS and the simulated
devices hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from drivers.registry import create_driver
from gateway.config import LoadedConfig
from gateway.flex.cycle import DEMO_SETTINGS
from gateway.flex.model import SENDING
from gateway.loader import load_config
from gateway.mapping import Point
from gateway.north.ams_sim import AmsSimConfig, AmsSimulator
from gateway.north.certs import dev_north_config
from gateway.north.config import RetryPolicy
from gateway.north.service import LEDGER_FILE, OUTBOX_FILE
from gateway.north.wire import Channel
from gateway.sqlite import read_only
from tests.faults.rogue import Proxy
from tests.support.flexsim import FLEX_CONFIG
from tests.support.pki import PkiFiles
from tests.support.procs import ROOT, SimProcess, child_env, free_port, sim_process

#: the simulated evening: the PV park is small then, the battery carries the activation
EVENING = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0).isoformat()
#: outbox retries fast enough to see the AMS come back within a second
RETRY = RetryPolicy(initial_s=0.2, max_s=1.0)
#: the points the witness reads: the meter and every set point the flexibility writes
METER = ("pcc.p", "pcc.e_import", "pcc.e_export")
SETPOINTS = ("bess1.p_set", "bess1.q_set", "pv1.limit", "pv1.q_set", "load1.curtail")
WITNESS_PERIOD_S = 0.25
#: a set point read back from a device against the value recorded (registers of 0.1)
SETPOINT_TOL = 0.11


def write_config(directory: Path, pki: PkiFiles, ams_url: str, port: int, ops_port: int) -> Path:
    """The flexibility tests' microgrid with `north:` (HTTPS to `ams_url`) and `flex:`
    (10-second intervals) sections; state in `directory/state`."""
    config = yaml.safe_load(FLEX_CONFIG.read_text())
    config["mappings"] = [str((FLEX_CONFIG.parent / m).resolve()) for m in config["mappings"]]
    config["state_dir"] = str(directory / "state")
    config["reconnect_max_s"] = 1.0
    config["ops"] = {"port": ops_port, "ready_wait_s": 10, "drain_s": 1}
    north = dev_north_config(pki.dev.directory, ams_url=ams_url, port=port, outbox=RETRY)
    config["north"] = north.model_dump(mode="json", exclude_none=True)
    config["north"]["ams"]["timeouts"] = {"connect_s": 1, "read_s": 3, "total_s": 4}
    config["flex"] = DEMO_SETTINGS.model_dump(mode="json")
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class GatewayProcess:
    """`mgms run` on `config`; start() again after kill() reuses the state directory."""

    config: Path
    ports: dict[str, int]
    ops_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: the process's open-file limit (soft and hard), as a service manager would set it
    nofile: int | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the gateway still runs"
        cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)]
        for device, port in self.ports.items():
            cmd += ["--port", f"{device}={port}"]
        with self.log.open("ab") as err:
            err.write(f"--- start {self.starts} ---\n".encode())
            err.flush()
            nofile = self.nofile
            limit = None if nofile is None else lambda: _limit_open_files(nofile)
            self.proc = subprocess.Popen(
                cmd,
                env=child_env(),
                cwd=ROOT,
                stderr=err,
                stdout=subprocess.DEVNULL,
                preexec_fn=limit,
            )
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {self.proc.returncode}; see {self.log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(self.ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway was not ready within {within} s; see {self.log}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Witness:
    """Reads the meter and the set-point registers straight from the simulators."""

    config: LoadedConfig
    samples: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)

    def _points(self, ids: tuple[str, ...]) -> dict[str, list[Point]]:
        out: dict[str, list[Point]] = {}
        for device in self.config.devices:
            for point in device.points:
                if point.id in ids:
                    out.setdefault(device.id, []).append(point)
        return out

    async def read(self, ids: tuple[str, ...]) -> dict[str, float]:
        values: dict[str, float] = {}
        for device_id, points in self._points(ids).items():
            device = next(d for d in self.config.devices if d.id == device_id)
            driver = create_driver(device)
            try:
                async with asyncio.timeout(5):
                    await driver.connect()
                    for reading in await driver.read(points):
                        assert reading.quality.good, reading
                        assert isinstance(reading.value, int | float)
                        values[reading.point] = float(reading.value)
            finally:
                await driver.close()
        return values

    async def run(self) -> None:
        """Sample the meter until cancelled."""
        device = next(d for d in self.config.devices if any(p.id in METER for p in d.points))
        points = [p for p in device.points if p.id in METER]
        driver = create_driver(device)
        try:
            async with asyncio.timeout(5):
                await driver.connect()
            while True:
                async with asyncio.timeout(5):
                    readings = await driver.read(points)
                now = datetime.now(UTC)
                for r in readings:
                    if r.quality.good and isinstance(r.value, int | float):
                        self.samples.setdefault(r.point, []).append((now, float(r.value)))
                await asyncio.sleep(WITNESS_PERIOD_S)
        finally:
            await driver.close()

    def mean_power(self, a: datetime, b: datetime) -> float:
        """Mean coupling-point P over [a, b) from the meter's counters (kW)."""
        hours = (b - a).total_seconds() / 3600
        deltas = []
        for point in ("pcc.e_import", "pcc.e_export"):
            rows = self.samples[point]
            assert rows[0][0] <= a and rows[-1][0] >= b, f"witness does not cover {a}..{b}"
            deltas.append(_interp(rows, b) - _interp(rows, a))
        return (deltas[0] - deltas[1]) / hours


def _interp(rows: list[tuple[datetime, float]], t: datetime) -> float:
    for (t0, v0), (t1, v1) in itertools.pairwise(rows):
        if t0 <= t <= t1:
            span = (t1 - t0).total_seconds()
            return v0 if span == 0 else v0 + (v1 - v0) * (t - t0).total_seconds() / span
    raise AssertionError(f"{t} outside the witness samples")


class State:
    """The gateway's state files, read as a tool reads them (the gateway may be dead)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _rows(self, file: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with read_only(self.dir / file, "state file") as db:
            return list(db.execute(sql, args))

    def activations(self) -> list[tuple[str, str, str, str]]:
        """(id, status, state, note) of every activation."""
        return [
            (a, s, st, n)
            for a, s, st, n in self._rows(
                "flex.sqlite", "SELECT id, status, state, note FROM flex_activation"
            )
        ]

    def activation_p(self, activation_id: str) -> float:
        """The coupling-point P the gateway decided for an activation."""
        [(p,)] = self._rows(
            "flex.sqlite", "SELECT p_kw FROM flex_activation WHERE id = ?", (activation_id,)
        )
        return float(p)

    def reservations(self) -> list[tuple[str, str]]:
        return [
            (i, s) for i, s in self._rows("flex.sqlite", "SELECT id, status FROM flex_reservation")
        ]

    def audit(self, kind: str) -> list[tuple[str, str]]:
        rows = self._rows(
            "flex.sqlite", "SELECT subject, decision FROM flex_audit WHERE kind = ?", (kind,)
        )
        return [(s, d) for s, d in rows]

    def writes(self) -> dict[str, list[tuple[float, str]]]:
        """Per point every recorded write (value, status), oldest first."""
        out: dict[str, list[tuple[float, str]]] = {}
        for point, value, status in self._rows(
            "flex.sqlite", "SELECT point, value, status FROM flex_setpoint ORDER BY seq"
        ):
            out.setdefault(point, []).append((float(value), status))
        return out

    def last_setpoints(self) -> dict[str, tuple[float, str]]:
        """Per point the last recorded write (value, status)."""
        return {point: rows[-1] for point, rows in self.writes().items()}

    def verified(self, activation_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "flex.sqlite",
            "SELECT body FROM flex_verification WHERE activation_id = ? ORDER BY interval_start",
            (activation_id,),
        )
        return [json.loads(b) for (b,) in rows]

    def outbox(self) -> list[tuple[str, str, str]]:
        """(message id, destination, state) in queue order."""
        return [
            (m, d, s)
            for m, d, s in self._rows(
                OUTBOX_FILE, "SELECT message_id, destination, state FROM outbox ORDER BY seq"
            )
        ]

    def ledger(self) -> dict[str, int]:
        return dict(self._rows(LEDGER_FILE, "SELECT message_id, status FROM inbound"))


@dataclass
class Rig:
    gateway: GatewayProcess
    ams: AmsSimulator
    proxy: Proxy
    witness: Witness
    state: State
    ams_port: int
    #: the set-point registers before the gateway first started
    initial: dict[str, float]
    kills: list[str] = field(default_factory=list)
    #: set points found on a device without a matching record right after a kill
    unrecorded: list[dict[str, Any]] = field(default_factory=list)
    #: writes the kill cut (recorded as `sending`): found and written again at the restart
    cut_writes: list[dict[str, Any]] = field(default_factory=list)

    def ams_down(self) -> None:
        """The AMS is gone: the connections open to it are closed, and new ones refused
        (the proxy has no upstream)."""
        self.proxy.upstream = free_port()
        self.proxy.cut()

    def ams_up(self) -> None:
        self.proxy.upstream = self.ams_port

    async def kill_and_restart(
        self, label: str, down_until: datetime | None = None, *, ready: bool = True
    ) -> None:
        """SIGKILL the gateway, compare the devices with the records, start it again on the
        same state directory (not before `down_until`) and wait until it is ready (with
        `ready` off, return once the process runs: the AMS retries meanwhile)."""
        await asyncio.to_thread(self.gateway.kill)
        self.kills.append(label)
        devices = await self.witness.read(SETPOINTS)
        writes = self.state.writes()
        for point, value in devices.items():
            rows = [(self.initial[point], "initial"), *writes.get(point, [])]
            last = rows[-1]
            if last[1] == SENDING:  # killed in this write: the old or the new value
                self.cut_writes.append({"kill": label, "point": point, "device": value})
                if abs(rows[-2][0] - value) <= SETPOINT_TOL:
                    continue
            if abs(last[0] - value) > SETPOINT_TOL:
                self.unrecorded.append(
                    {"kill": label, "point": point, "device": value, "record": last}
                )
        if down_until is not None:
            await asyncio.sleep(max((down_until - datetime.now(UTC)).total_seconds(), 0.0))
        self.gateway.start()
        if ready:
            await self.gateway.wait_ready()

    def received(self, channel: Channel) -> list[str]:
        return [m.id for m in self.ams.messages(channel)]


def _limit_open_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


@contextlib.asynccontextmanager
async def market_rig(tmp: Path, pki: PkiFiles, *, nofile: int | None = None) -> AsyncIterator[Rig]:
    """The running rig; everything stopped on exit. `nofile`: the gateway's open-file
    limit."""
    with sim_fleet() as sim:
        ams_port, gw_port, ops_port = free_port(), free_port(), free_port()
        async with Proxy(ams_port) as proxy:
            path = write_config(tmp, pki, f"https://127.0.0.1:{proxy.port}", gw_port, ops_port)
            loaded = load_config(path, port_overrides=sim.ports)
            (tmp / "ams").mkdir()
            ams_config = AmsSimConfig.dev(
                pki.dev.directory,
                microgrid=loaded.gateway.microgrid.id,
                state_dir=tmp / "ams",
                gateway_url=f"https://127.0.0.1:{gw_port}",
                port=ams_port,
            )
            async with AmsSimulator(ams_config) as ams:
                ams_task = asyncio.create_task(ams.run(), name="ams-sim")
                witness = Witness(loaded)
                witness_task = asyncio.create_task(witness.run(), name="witness")
                gateway = GatewayProcess(
                    path, sim.ports, ops_port, tmp / "gateway.log", nofile=nofile
                )
                try:
                    await asyncio.wait_for(ams.ready(), 10)
                    initial = await witness.read(SETPOINTS)
                    gateway.start()
                    await gateway.wait_ready()
                    state = State(tmp / "state")
                    yield Rig(gateway, ams, proxy, witness, state, ams_port, initial)
                finally:
                    await asyncio.to_thread(gateway.stop)
                    for task in (witness_task, ams_task):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task


@contextmanager
def sim_fleet() -> Iterator[SimProcess]:
    devices = [d.id for d in load_config(FLEX_CONFIG).devices]
    with sim_process(devices, config=FLEX_CONFIG, extra=["--start", EVENING]) as sim:
        yield sim


def step_of(loaded: LoadedConfig) -> timedelta:
    return timedelta(seconds=loaded.gateway.flex.interval_s)
