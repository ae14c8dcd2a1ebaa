"""Northbound: Reserve Activation round trip over mutual-TLS HTTPS and over MQTT, and the
durable outbox's write throughput against a naive commit per message.

Round trip: the AMS simulator sends signed Reserve Activations to the gateway's North and
waits for the answer; the gateway runs the whole inbound pipeline (parse, signature,
shapes, authorization, ledger, and the flexibility service's decision on the simulated test
microgrid: the reserved band and window, a trial dispatch, the set point recorded) and
answers with a signed Response. Over HTTPS the AMS keeps its TLS connection open; over
MQTT both sides are connected to a local mosquitto with TLS client certificates. Median
and p99 in ms; the MQTT/HTTPS ratio.

Outbox: `--messages` forecasts-sized messages queued by `--producers` concurrent tasks
through `Outbox.put` (group commit, synchronous=FULL, WAL) against the naive way, one
INSERT and COMMIT per message with the same durability. Messages per second and the ratio.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from fwsim.broker import BrokerFiles, mosquitto
from fwsim.process import free_port
from gateway.north.ams_sim import AmsSimConfig, AmsSimulator
from gateway.north.certs import dev_north_config, init_dev_pki
from gateway.north.config import MqttConfig, RetryPolicy
from gateway.north.outbox import OutboundMessage, Outbox
from gateway.north.service import North
from gateway.north.wire import TURTLE, Channel
from gateway.smartapi.flexibility import (
    FlexibilityForecast,
)
from tests.support.north import MICROGRID, flexibility

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def round_trips(work: Path, count: int) -> dict[str, object]:
    pki = init_dev_pki(work / "pki")
    files = BrokerFiles(ca=pki.ca, cert=pki["broker"], key=pki["broker-key"])
    with mosquitto(work / "broker", files) as broker:
        mqtt = MqttConfig(host=broker.host, port=broker.port)
        gw_port, ams_port = free_port(), free_port()
        config = dev_north_config(
            pki.directory, ams_url=f"https://127.0.0.1:{ams_port}", port=gw_port, mqtt=mqtt
        )
        ams_config = AmsSimConfig.dev(
            pki.directory,
            microgrid=MICROGRID,
            state_dir=work / "ams",
            gateway_url=f"https://127.0.0.1:{gw_port}",
            port=ams_port,
            mqtt=mqtt,
        )
        async with (
            flexibility(work / "gw") as flex,
            North(
                config, microgrid=MICROGRID, state_dir=work / "gw", handler=flex.handler
            ) as north,
            AmsSimulator(ams_config) as ams,
        ):
            tasks = [asyncio.create_task(north.run()), asyncio.create_task(ams.run())]
            try:
                async with asyncio.timeout(30):
                    await north.started()
                    await ams.ready()
                    assert north.mqtt is not None
                    await north.mqtt.connected.wait()
                flex.north = north
                await flex.publish_forecast()
                got = await asyncio.wait_for(ams.next_message(Channel.FORECAST), 30)
                assert isinstance(got, FlexibilityForecast)
                n = ams.notification_for(got, intervals=2)
                assert (await ams.send(n)).answer.status == 200
                results: dict[str, list[float]] = {"https": [], "mqtt": []}
                # interleaved in blocks so both see the same machine load
                block = 20
                for round_ in range(-1, count // block):
                    for via in ("https", "mqtt"):
                        for _ in range(block):
                            a = ams.activation_for(n, got, fraction=0.5)
                            sent = await ams.send(a, via=via)
                            if sent.answer.status != 200:
                                raise RuntimeError(f"{via}: {sent.answer.body[:300]!r}")
                            if round_ >= 0:  # the first round warms up
                                results[via].append(sent.latency_ms)
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
    https, mqtt_ms = results["https"], results["mqtt"]
    return {
        "activations_each": len(https),
        "https_median_ms": round(statistics.median(https), 2),
        "https_p99_ms": round(percentile(https, 0.99), 2),
        "mqtt_median_ms": round(statistics.median(mqtt_ms), 2),
        "mqtt_p99_ms": round(percentile(mqtt_ms, 0.99), 2),
        "mqtt_over_https_median": round(statistics.median(mqtt_ms) / statistics.median(https), 2),
    }


async def outbox_put(path: Path, bodies: list[bytes], producers: int) -> float:
    policy = RetryPolicy()
    async with Outbox(path, policy) as outbox:
        queue = list(enumerate(bodies))

        async def producer() -> None:
            while queue:
                i, body = queue.pop()
                await outbox.put(OutboundMessage(f"m{i}", "forecast", TURTLE, body))

        started = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(producers)))
        elapsed = time.perf_counter() - started
        assert (await outbox.stats()).pending == len(bodies)
    return len(bodies) / elapsed


def naive_put(path: Path, bodies: list[bytes]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, message_id TEXT UNIQUE, destination TEXT,"
        " content_type TEXT, body BLOB, queued_at REAL)"
    )
    started = time.perf_counter()
    for i, body in enumerate(bodies):
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO outbox (message_id, destination, content_type, body, queued_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (f"m{i}", "forecast", TURTLE, body, time.time()),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(bodies) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activations", type=int, default=200, help="per transport")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--producers", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-north-") as tmp:
        work = Path(tmp)
        figures = await round_trips(work, args.activations)
        body = b"x" * 4096  # about a signed 8-interval forecast
        bodies = [body] * args.messages
        grouped = await outbox_put(work / "outbox.sqlite", bodies, args.producers)
        naive = naive_put(work / "naive.sqlite", bodies)
    figures.update(
        {
            "outbox_messages": args.messages,
            "outbox_producers": args.producers,
            "outbox_msgs_per_s": round(grouped),
            "naive_commit_per_message_msgs_per_s": round(naive),
            "outbox_over_naive": round(grouped / naive, 1),
        }
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
