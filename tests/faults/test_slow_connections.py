"""Finding 1 of the attack run: slow request headers were never timed out. With 1,100
mutual-TLS connections sending a header byte every 5 s and the process at 1,024 open files
(systemd's default; the unit set no LimitNOFILE), accept() failed on the north listener and
on the ops listener, /healthz and legitimate signed requests timed out for 40 s.

Here the same flood (from its own process, tests/faults/slowloris.py, split over the AMS's
and the operator's certificates) hits `mgms run` in its own process with its open-file
limit at 1,024, while the test sends legitimate signed access reads (fresh mutual-TLS
connections, the operator's certificate) and polls /healthz on the ops listener. Every
legitimate request must be answered 200, every slow connection closed by the server
within its header timeout, the gateway's RSS back near where it started. A second test
floods the ops listener itself: its own cap and timeouts keep /healthz answering.

Latency figures are printed (p50/p99 with the load average); the machine is shared, so the
only time bound asserted is the issue's: p99 of the legitimate requests <= 1 s."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.north.certs import OPERATOR_IDENTITY
from gateway.north.config import ServerConfig, TlsFiles
from gateway.north.tls import client_context
from gateway.smartapi.access import ACCESS_PATH
from gateway.smartapi.encode import der_iri
from gateway.smartapi.messages import (
    Activity,
    Entity,
    Method,
    Request,
    ValueObject,
    new_message_id,
)
from gateway.smartapi.vocab import QuantityKind
from tests.faults.market_rig import Rig, market_rig
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki
from tests.support.procs import ROOT, child_env

pytestmark = pytest.mark.integration

SLOW = 1_100
FLOOD_S = 45.0
NOFILE = 1_024
SERVER = ServerConfig()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def load() -> float:
    return os.getloadavg()[0]


def read_request() -> Request:
    return Request(
        id=new_message_id(),
        sender=OPERATOR_IDENTITY,
        generated_at=datetime.now(UTC),
        activities=(
            Activity(
                method=Method.READ,
                entities=(
                    Entity(
                        iri=der_iri(support.MICROGRID, "bess1"),
                        value_objects=(ValueObject(quantity=QuantityKind.STATE_OF_CHARGE),),
                    ),
                ),
            ),
        ),
    )


async def slowloris(pki: PkiFiles, port: int, count: int, duration: float) -> dict[str, object]:
    certs = [",".join(str(p) for p in pki.pair(party)) for party in ("ams", "operator")]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.slowloris",
        *("--port", str(port), "--ca", str(pki.ca), "--count", str(count)),
        *("--duration", str(duration), "--interval", "5"),
        *(arg for cert in certs for arg in ("--cert", cert)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=child_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    report: dict[str, object] = json.loads(out.decode().splitlines()[-1])
    return report


async def legitimate(rig: Rig, pki: PkiFiles, gw_url: str, until: float) -> dict[str, list[float]]:
    """Signed access reads on fresh connections every 0.25 s and /healthz every second,
    until `until`; the latency of each (an answer other than 200 fails the test)."""
    cert, key = pki.pair("operator")
    ctx = client_context(TlsFiles(ca=(pki.ca,), cert=cert, key=key))
    timeout = aiohttp.ClientTimeout(total=20)
    took: dict[str, list[float]] = {"access": [], "healthz": []}
    failures: list[str] = []

    async def access(session: aiohttp.ClientSession) -> None:
        body = support.signed(pki, "operator", read_request())
        started = time.perf_counter()
        try:
            async with session.post(
                gw_url + ACCESS_PATH, data=body, headers={"Content-Type": "text/turtle"}
            ) as r:
                await r.read()
                if r.status != 200:
                    failures.append(f"access {r.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"access {type(exc).__name__}: {exc}")
        took["access"].append(time.perf_counter() - started)

    async def healthz(session: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        try:
            async with session.get(f"http://127.0.0.1:{rig.gateway.ops_port}/healthz") as r:
                await r.read()
                if r.status != 200:
                    failures.append(f"healthz {r.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"healthz {type(exc).__name__}: {exc}")
        took["healthz"].append(time.perf_counter() - started)

    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, force_close=True), timeout=timeout
        ) as north,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=timeout
        ) as ops,
    ):
        tasks: list[asyncio.Task[None]] = []
        tick = 0
        while time.monotonic() < until:
            tasks.append(asyncio.create_task(access(north)))
            if tick % 4 == 0:
                tasks.append(asyncio.create_task(healthz(ops)))
            tick += 1
            await asyncio.sleep(0.25)
        await asyncio.gather(*tasks)
    assert failures == [], failures[:10]
    return took


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_slow_headers_flood_leaves_legitimate_requests_and_healthz_served(
    pki: PkiFiles, tmp_path: Path
) -> None:
    async with market_rig(tmp_path, pki, nofile=NOFILE) as rig:
        assert rig.gateway.proc is not None and rig.ams.config.gateway_url is not None
        pid, gw_url = rig.gateway.proc.pid, rig.ams.config.gateway_url
        port = int(gw_url.rsplit(":", 1)[1])
        await asyncio.sleep(2)
        rss_before, files_before = rss_mb(pid), open_files(pid)
        samples: list[tuple[float, int]] = []

        async def sample() -> None:
            while True:
                samples.append((rss_mb(pid), open_files(pid)))
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        try:
            flood = asyncio.create_task(slowloris(pki, port, SLOW, FLOOD_S))
            await asyncio.sleep(3)  # the connections are being opened
            took = await legitimate(rig, pki, gw_url, started + FLOOD_S - 5)
            report = await flood
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await asyncio.sleep(SERVER.idle_timeout_s)  # what the gateway held is let go
        rss_after, files_after = rss_mb(pid), open_files(pid)
        figures = {
            "legitimate_access": {
                "n": len(took["access"]),
                "p50_s": round(statistics.median(took["access"]), 3),
                "p99_s": round(p(took["access"], 0.99), 3),
            },
            "healthz": {"n": len(took["healthz"]), "p99_s": round(p(took["healthz"], 0.99), 3)},
            "slow": report,
            "rss_mb": {
                "before": round(rss_before, 1),
                "peak": round(max(r for r, _ in samples), 1),
                "after": round(rss_after, 1),
            },
            "open_files": {"before": files_before, "peak": max(f for _, f in samples)},
            "open_files_after": files_after,
            "load_avg_1m": round(load(), 2),
        }
        print(json.dumps(figures))
    # every slow connection was closed by the server, within its header timeout (a byte
    # every 5 s: the first one arrives at once, the cut comes one reap period later)
    assert report["still_open"] == 0, figures
    closed = report["closed_after_s"]
    assert isinstance(closed, dict) and closed["max"] <= SERVER.header_timeout_s + 7, figures
    # the process never ran out of files, and gave back what it held
    assert figures["open_files"]["peak"] < NOFILE - 64, figures  # type: ignore[index]
    assert files_after <= files_before + 8, figures
    assert rss_after <= rss_before + 40, figures
    assert figures["legitimate_access"]["p99_s"] <= 1.0, figures  # type: ignore[index]


async def test_ops_listener_keeps_answering_under_its_own_flood(
    pki: PkiFiles, tmp_path: Path
) -> None:
    """300 plain connections to the ops listener that send a header byte every 2 s: its cap
    (32) drops the oldest, its header timeout closes the rest; /healthz answers meanwhile."""
    async with market_rig(tmp_path, pki) as rig:
        port = rig.gateway.ops_port
        held: list[asyncio.StreamWriter] = []
        closed_by_server = 0

        async def slow_one() -> None:
            nonlocal closed_by_server
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            held.append(writer)
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" * 10:
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                    if not await asyncio.wait_for(reader.read(1), 2):
                        closed_by_server += 1
                        return
                except TimeoutError:
                    continue
                except OSError:
                    closed_by_server += 1
                    return

        flood = [asyncio.create_task(slow_one()) for _ in range(300)]
        answered = []
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=5),
        ) as session:
            for _ in range(20):
                await asyncio.sleep(0.5)
                async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    answered.append(r.status)
        await asyncio.wait_for(asyncio.gather(*flood), 40)
        for writer in held:
            writer.transport.abort()
    assert answered == [200] * 20
    assert closed_by_server == 300
