"""Scale: a generated site of N Modbus TCP devices x M float32 points, simulator and gateway
as separate processes, against a bare pymodbus client reading the same blocks.

1. Generates a config and one mapping file of N devices x M float32 holding registers
   (contiguous, SunSpec style), polled every second. The points take the roles of the
   simulated microgrid's measurements (PV, load, battery, coupling point) in turn, so the
   simulator serves every one and some move while others stay flat.
2. Times `mgms check` of the config (a process of its own, as an operator runs it).
3. Starts `mgms sim`, then measures a bare client, the floor: pymodbus reading and decoding
   the same blocks the same way, so the difference is what the gateway adds (quality, time
   stamps, units, the point table, storage by exception, metrics). Same blocks: the
   gateway's own read plan (`plan_reads` over the loaded mapping, the same options). Same
   decode: each block's words packed and unpacked with `struct`, two calls a block, as
   `drivers/modbus/layout.py` does. Same connections: one client per device, each its own
   task. Same period: one round of every block per second. Its CPU time per point, with
   all devices polled together and again with each on the gateway's own phase. A second
   floor below it: the same reads over plain asyncio sockets, no Modbus library (what any
   client pays the kernel and the event loop). Each floor is measured before the gateway
   runs and again after it stops, and given as the mean of the two: on a shared machine
   the speed drifts over minutes, and a floor taken only before would move the ratio with
   the drift (both are in the line, `*_before_after`).
4. Gives the store a history (`--history-rows` rows of every point, written before the
   gateway starts): a store that has run for a while costs more per row than an empty one
   (each point's rows fill pages of the history clustered by point and time), and that is
   the steady state.
5. Starts `mgms run` as the service unit runs it (jemalloc preloaded; `--allocator glibc`
   for a bare `mgms run`), with NOTIFY_SOCKET on a socket of its own: seconds to READY=1.
   After a warm-up, for `--seconds`: points acquired per second (polls from /metrics x points per
   device), the gateway's CPU time (user + system, /proc) per point, the rows it stored
   per point read, its RSS. `check` and READY also give their CPU seconds: on a shared
   machine the wall time says more about the neighbours. `--py-spy BINARY` records the
   gateway's profile over the measured window (raw format, beside the logs).

Prints one JSON line. The machine may be shared: the load average is in the line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus.plan import ReadRequest, plan_reads
from drivers.modbus.protocol import ModbusAddress, ModbusOptions
from fwsim.process import child_env, free_port, start_sim
from gateway.acquisition import poll_phase
from gateway.allocator import SERVICE_ENVIRONMENT
from gateway.loader import load_config
from gateway.sqlite import Database, read_only, transaction
from gateway.store import SCHEMA

ROOT = Path(__file__).resolve().parent.parent

#: (der, quantity, unit) the simulator models; the generated points take them in turn
ROLES = (
    ("pv1", "active_power", "KiloW"),
    ("pv1", "available_power", "KiloW"),
    ("pv1", "reactive_power", "KiloVAR"),
    ("load1", "active_power", "KiloW"),
    ("bess1", "state_of_charge", "PERCENT"),
    ("pcc", "active_power", "KiloW"),
    ("pcc", "voltage", "V"),
    ("pcc", "frequency", "HZ"),
    ("pcc", "energy_import", "KiloW-HR"),
    ("pcc", "current", "A"),
)

CONFIG = """\
microgrid: {{id: scale-site, name: Generated scale site}}
state_dir: {state}
mappings: [site.yaml]
coupling_point: {{id: pcc, import_limit_kw: 200, export_limit_kw: 150, q_limit_kvar: 100}}
ops: {{port: {ops_port}}}
ders:
  - {{id: bess1, type: battery, control: centralized, ratings: {{p_min_kw: -50, p_max_kw: 50,
      s_max_kva: 60, energy_kwh: 100, soc_min_pct: 10, soc_max_pct: 90}}}}
  - {{id: pv1, type: pv, control: distributed, ratings: {{p_min_kw: 0, p_max_kw: 60,
      s_max_kva: 66}}}}
  - {{id: load1, type: load, control: distributed, ratings: {{p_min_kw: -80, p_max_kw: 0}}}}
"""


def generate(folder: Path, devices: int, points: int, storage: str) -> Path:
    """Write the site's config and mapping; return the config path."""
    lines = ["devices:"]
    for d in range(devices):
        lines += [
            f"  - id: dev{d}",
            "    protocol: modbus",
            "    connection: {host: 127.0.0.1, port: 0}",  # the simulator picks, and says
            "    poll_interval: 1.0",
            # a simulator serving 50,000 points answers late: slow polls, not dead links
            "    timeout: 5.0",
            "    points:",
        ]
        for p in range(points):
            der, quantity, unit = ROLES[(d + p) % len(ROLES)]
            lines.append(
                f"      - {{id: dev{d}.p{p}, address: 1/holding/{40000 + 2 * p},"
                f" type: float32, unit: {unit}, der: {der}, quantity: {quantity}{storage}}}"
            )
    (folder / "site.yaml").write_text("\n".join(lines) + "\n")
    config = folder / "site-config.yaml"
    config.write_text(CONFIG.format(state=folder / "state", ops_port=free_port()))
    return config


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    return _cpu_s_of(Path(f"/proc/{pid}/stat"))


def _main_thread_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process's main thread (the gateway's event loop;
    the store writes and other blocking calls run in worker threads)."""
    return _cpu_s_of(Path(f"/proc/{pid}/task/{pid}/stat"))


def _cpu_s_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _rows(store: Path) -> int:
    with read_only(store, "store") as conn:
        return sum(
            int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("history", "recent")
        )


def prefill(store: Path, point_ids: list[str], rows_per_point: int) -> None:
    """Write `rows_per_point` rows a second apart for every point, ending now, through the
    gateway's own schema: the history a running store has."""
    end = time.time()

    def fill(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.executemany("INSERT INTO points (pid, id) VALUES (?,?)", enumerate(point_ids))
            conn.executemany(
                "INSERT INTO history VALUES (?,?,?,NULL,NULL)",
                (
                    (pid, end - rows_per_point + k, float(k % 7))
                    for pid in range(len(point_ids))
                    for k in range(rows_per_point)
                ),
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def run() -> None:
        async with Database(store, SCHEMA, synchronous="NORMAL", label="store") as db:
            await db.call(fill)

    asyncio.run(run())


def _counters(ops_port: int) -> tuple[int, int, int]:
    """Polls and reconnects of all devices so far, and the samples waiting for the store's
    next write, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=60) as r:
        lines = r.read().decode().splitlines()

    def total(name: str) -> int:
        return sum(
            int(float(x.rsplit(" ", 1)[1])) for x in lines if x.startswith((name + "{", name + " "))
        )

    return (
        total("mgms_device_polls_total"),
        total("mgms_device_reconnects_total"),
        total("mgms_store_pending_samples"),
    )


# -- the bare client -------------------------------------------------------------------


#: a Modbus TCP read-holding-registers request: MBAP header (transaction, protocol 0,
#: length 6, unit), function code 3, address, count
_READ_REQUEST = struct.Struct(">HHHBBHH")


class _SocketModbus(asyncio.Protocol):
    """The socket floor: read requests over a plain asyncio connection, one at a time, no
    library; an answer is checked only as far as the floor needs (its transaction, function
    code and byte count). What is left is the kernel's and the event loop's share."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._answer: asyncio.Future[bytes] | None = None
        self._transaction = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < 6:
            return
        end = 6 + int.from_bytes(self._buffer[4:6], "big")
        if len(self._buffer) >= end and self._answer is not None:
            frame, self._buffer = self._buffer[:end], self._buffer[end:]
            self._answer.set_result(frame)

    async def read(self, request: ReadRequest) -> bytes:
        """The words of one read request's answer, as bytes."""
        assert self._transport is not None
        self._transaction = (self._transaction + 1) & 0xFFFF
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(
            _READ_REQUEST.pack(
                self._transaction, 0, 6, request.unit, 3, request.address, request.count
            )
        )
        async with asyncio.timeout(10):
            frame = await self._answer
        if (
            int.from_bytes(frame[:2], "big") != self._transaction
            or frame[7] != 3
            or frame[8] != 2 * request.count
        ):
            raise RuntimeError(f"socket floor: unexpected answer {frame[:9].hex()}")
        return frame[9:]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _bare_device(
    host: str,
    port: int,
    plan: list[ReadRequest],
    rounds: int,
    period: float,
    phase: float | None,
    socket_floor: bool = False,
) -> int:
    """Read the plan's blocks `rounds` times, one round per `period`, decoding with struct;
    all devices together, or each on its `phase` of the period (as the gateway polls). With
    pymodbus, or over a plain socket (`socket_floor`: the words unpacked from the answer's
    bytes in one call)."""
    layouts = [(struct.Struct(f">{r.count}H"), struct.Struct(f">{r.count // 2}f")) for r in plan]
    if socket_floor:
        _, protocol = await asyncio.get_running_loop().create_connection(_SocketModbus, host, port)
        client = None
    else:
        # generous: on a loaded machine the simulator may answer late; CPU time is what counts
        client = AsyncModbusTcpClient(host, port=port, timeout=10, retries=2, reconnect_delay=0)
        await client.connect()
    decoded = 0
    try:
        next_at = time.monotonic()
        if phase is not None:
            next_at += (phase - next_at) % period
            await asyncio.sleep(next_at - time.monotonic())
        for _ in range(rounds):
            for request, (words, floats) in zip(plan, layouts, strict=True):
                if client is None:
                    decoded += len(floats.unpack(await protocol.read(request)))
                    continue
                response = await client.read_holding_registers(
                    request.address, count=request.count, device_id=request.unit
                )
                decoded += len(floats.unpack(words.pack(*response.registers)))
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        if client is None:
            protocol.close()
        else:
            client.close()
    return decoded


async def bare_client(
    config: Path,
    ports: dict[str, int],
    rounds: int,
    period: float,
    phased: bool,
    socket_floor: bool = False,
) -> dict[str, float]:
    loaded = load_config(config, port_overrides=ports)
    jobs = []
    for device in loaded.devices:
        options = device.typed_options
        assert isinstance(options, ModbusOptions)
        addresses = []
        for point in device.points:
            address = device.address_of(point.id)
            assert isinstance(address, ModbusAddress)
            addresses.append((point.id, address))
        plan = plan_reads(addresses, options)
        assert device.connection.host is not None and device.connection.port is not None
        phase = poll_phase(device.id, period) if phased else None
        jobs.append((device.connection.host, device.connection.port, plan, phase))
    cpu0 = time.process_time()
    counts = await asyncio.gather(
        *(
            _bare_device(host, port, plan, rounds, period, phase, socket_floor)
            for host, port, plan, phase in jobs
        )
    )
    cpu = time.process_time() - cpu0
    points = sum(counts)
    return {"points": points, "cpu_us_per_point": round(cpu / points * 1e6, 2)}


#: the floors, by name: (all devices polled together?, over plain sockets?)
FLOORS = {"bare": (False, False), "phased": (True, False), "sockets": (False, True)}


def floors(config: Path, ports: dict[str, int], rounds: int) -> dict[str, float]:
    """CPU us per point of each floor (`FLOORS`), one run each."""
    return {
        name: asyncio.run(bare_client(config, ports, rounds, 1.0, phased, sockets))[
            "cpu_us_per_point"
        ]
        for name, (phased, sockets) in FLOORS.items()
    }


# -- the gateway process ---------------------------------------------------------------


def _wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited with {proc.returncode} before READY")
        sock.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            if b"READY=1" in sock.recv(4096).split(b"\n"):
                return
    raise SystemExit(f"gateway not READY within {within} s")


def run_gateway(
    config: Path,
    ports: dict[str, int],
    folder: Path,
    warmup: float,
    seconds: float,
    py_spy: Path | None = None,
    allocator: str = "service",
) -> dict[str, float | str]:
    ops_port = load_config(config).gateway.ops.port
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(folder / "notify"))
    # as the service unit runs it (jemalloc preloaded, gateway/allocator.py), or as a bare
    # `mgms run` does (glibc, trimmed): the allocator moves the CPU per point
    unit_env = SERVICE_ENVIRONMENT if allocator == "service" else {}
    env = child_env() | unit_env | {"NOTIFY_SOCKET": str(folder / "notify")}
    started = time.monotonic()
    log = (folder / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway.cli", "run", "--config", str(config)),
            *(f"--port={device}={port}" for device, port in ports.items()),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(notify, proc, 120)
        ready_s, ready_cpu_s = time.monotonic() - started, _cpu_s(proc.pid)
        time.sleep(warmup)
        # rows kept: in the store, or waiting for its next write (it holds a few seconds)
        (polls0, reconnects0, pending0), cpu0, loop0, t0 = (
            _counters(ops_port),
            _cpu_s(proc.pid),
            _main_thread_cpu_s(proc.pid),
            time.monotonic(),
        )
        rows0 = _rows(folder / "state" / "gateway.sqlite") + pending0
        if py_spy is None:
            time.sleep(seconds)
        else:  # sampled from outside: the gateway's own CPU time is not charged for it
            subprocess.run(
                [
                    *(str(py_spy), "record", "--nonblocking", "-f", "raw", "-r", "200"),
                    *("-p", str(proc.pid), "-d", str(round(seconds))),
                    *("-o", str(folder / "gateway.profile")),
                ],
                check=True,
                capture_output=True,
            )
        (polls1, reconnects1, pending1), cpu1, loop1, t1 = (
            _counters(ops_port),
            _cpu_s(proc.pid),
            _main_thread_cpu_s(proc.pid),
            time.monotonic(),
        )
        rows1 = _rows(folder / "state" / "gateway.sqlite") + pending1
        rss = _rss_mb(proc.pid)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        notify.close()
    return {
        "ready_s": round(ready_s, 2),
        "ready_cpu_s": round(ready_cpu_s, 2),
        "rows": rows1 - rows0,
        "polls": polls1 - polls0,
        "reconnects": reconnects1 - reconnects0,
        "elapsed_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "loop_cpu_s": loop1 - loop0,
        "rss_mb": round(rss, 1),
        "allocator": "jemalloc" if "libjemalloc" in maps else "glibc",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--bare-rounds", type=int, default=10)
    parser.add_argument(
        "--history-rows",
        type=int,
        default=300,
        help="rows of history per point in the store before the gateway starts (0: empty)",
    )
    parser.add_argument("--logs", type=Path, help="copy the gateway's and simulator's logs here")
    parser.add_argument("--py-spy", type=Path, help="py-spy binary: profile the gateway")
    parser.add_argument(
        "--allocator",
        choices=("service", "glibc"),
        default="service",
        help="run the gateway in the service unit's allocator environment (jemalloc, if "
        "installed) or with glibc's malloc as a bare `mgms run`",
    )
    parser.add_argument(
        "--storage",
        default="",
        help="storage settings given to every point, e.g. '{deadband: 0.01}' (default: none)",
    )
    args = parser.parse_args()
    storage = f", storage: {args.storage}" if args.storage else ""
    with tempfile.TemporaryDirectory(prefix="mgms-scale-") as tmp:
        folder = Path(tmp)
        config = generate(folder, args.devices, args.points, storage)
        started, children = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        check = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "check", str(config)],
            env=child_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        check_s = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        check_cpu_s = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        if check.returncode != 0:
            raise SystemExit(f"mgms check failed:\n{check.stderr[-2000:]}")
        sim = start_sim(config, {}, ready_timeout=120, log=(folder / "sim.log").open("w"))
        try:
            floors_before = floors(config, sim.ports, args.bare_rounds)
            ids = [f"dev{d}.p{p}" for d in range(args.devices) for p in range(args.points)]
            prefill(folder / "state" / "gateway.sqlite", ids, args.history_rows)
            gw = run_gateway(
                config, sim.ports, folder, args.warmup, args.seconds, args.py_spy, args.allocator
            )
            floors_after = floors(config, sim.ports, args.bare_rounds)
        finally:
            sim.stop()
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for name in ("gateway.log", "sim.log", "gateway.profile"):
                    if (folder / name).exists():
                        shutil.copy(folder / name, args.logs / name)
    points = gw["polls"] * args.points
    gw_us = gw["cpu_s"] / points * 1e6
    floor = {name: round((floors_before[name] + floors_after[name]) / 2, 2) for name in FLOORS}
    print(
        json.dumps(
            {
                "bench": "scale",
                "devices": args.devices,
                "points_per_device": args.points,
                "points": args.devices * args.points,
                "storage": args.storage or "default",
                "history_rows_per_point": args.history_rows,
                "check_s": round(check_s, 2),
                "check_cpu_s": round(check_cpu_s, 2),
                "ready_s": gw["ready_s"],
                "ready_cpu_s": gw["ready_cpu_s"],
                "points_per_s": round(points / gw["elapsed_s"], 1),
                # below 1: the polls fell behind their 1 s period (simulator or gateway)
                "polls_on_time": round(gw["polls"] / (args.devices * gw["elapsed_s"]), 2),
                "reconnects": gw["reconnects"],
                "gateway_cpu_us_per_point": round(gw_us, 2),
                # of which the event loop (poll, decode, point table, storage decisions);
                # the rest is worker threads, mostly the store's SQLite writes
                "gateway_loop_cpu_us_per_point": round(gw["loop_cpu_s"] / points * 1e6, 2),
                # each floor: the mean of its runs before and after the gateway's
                "bare_client_cpu_us_per_point": floor["bare"],
                "bare_client_before_after": [floors_before["bare"], floors_after["bare"]],
                "ratio_gateway_to_bare": round(gw_us / floor["bare"], 2),
                # the same client with each device on the gateway's own phase of the period
                # (spread so an activation does not wait behind every device's answers at
                # once): an answer a wake-up, not twenty
                "bare_phased_cpu_us_per_point": floor["phased"],
                "bare_phased_before_after": [floors_before["phased"], floors_after["phased"]],
                "ratio_gateway_to_bare_phased": round(gw_us / floor["phased"], 2),
                # the same reads over plain sockets, no Modbus library: the kernel's and the
                # event loop's share of any client
                "socket_floor_cpu_us_per_point": floor["sockets"],
                "socket_floor_before_after": [floors_before["sockets"], floors_after["sockets"]],
                "ratio_gateway_to_socket_floor": round(gw_us / floor["sockets"], 2),
                "stored_rows_per_point_read": round(gw["rows"] / points, 3),
                "rss_mb": gw["rss_mb"],
                "gateway_allocator": gw["allocator"],
                "bench_peak_rss_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
