"""The northbound `mgms` commands: `certs init` and `ams-sim`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.north.config import MqttConfig

# The commands import what they run when they run: every `mgms` command, `mgms run` too,
# builds these parsers, and the AMS simulator and certificates need the Smart API stack.
if TYPE_CHECKING:
    from gateway.north.ams_sim import AmsSimConfig, AmsSimulator


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("certs", help="development certificates and signing keys")
    certs = p.add_subparsers(dest="certs_command", required=True)
    init = certs.add_parser("init", help="create a development CA, certificates and keys")
    init.add_argument("directory", type=Path)
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(func=cmd_certs_init)

    p = sub.add_parser("ams-sim", help="run the AMS simulator (the gateway's northbound peer)")
    p.add_argument("--certs", type=Path, required=True, help="directory of `mgms certs init`")
    p.add_argument("--microgrid", required=True)
    p.add_argument("--gateway", help="the gateway's HTTPS base URL, https://127.0.0.1:8443")
    p.add_argument("--port", type=int, default=0, help="HTTPS port (0: a free one)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="also use this MQTT broker")
    p.add_argument("--state", type=Path, help="state directory (default: CERTS/ams-state)")
    p.add_argument(
        "--cycle",
        action="store_true",
        help="on the first forecast send a notification and an activation; exit after the "
        "verification",
    )
    p.set_defaults(func=cmd_ams_sim)


def cmd_certs_init(args: argparse.Namespace) -> int:
    from gateway.north.certs import init_dev_pki

    try:
        pki = init_dev_pki(args.directory, force=args.force)
    except FileExistsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"directory": str(pki.directory), "files": sorted(pki.files)}))
    return 0


def cmd_ams_sim(args: argparse.Namespace) -> int:
    from gateway.north.ams_sim import AmsSimConfig

    mqtt = None
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        mqtt = MqttConfig(host=host or "127.0.0.1", port=int(port))
    config = AmsSimConfig.dev(
        args.certs,
        microgrid=args.microgrid,
        state_dir=args.state or args.certs / "ams-state",
        gateway_url=args.gateway,
        port=args.port,
        mqtt=mqtt,
    )
    return asyncio.run(_ams_sim(config, cycle=args.cycle))


async def _ams_sim(config: AmsSimConfig, *, cycle: bool) -> int:
    from gateway.north.ams_sim import AmsSimulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AmsSimulator(config) as ams:
        server = asyncio.create_task(ams.run())
        try:
            port = await ams.ready()
            print(json.dumps({"ready": True, "port": port}), flush=True)
            if cycle:
                work = asyncio.create_task(_cycle(ams, via="mqtt" if config.mqtt else "https"))
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({work, stopped, server}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not work.done():
                    work.cancel()
                    return 1
                print(json.dumps(work.result()), flush=True)
            else:
                await stop.wait()
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
    return 0


async def _cycle(ams: AmsSimulator, *, via: str) -> dict[str, object]:
    """One CRP cycle driven by the gateway's first forecast."""
    from gateway.north.wire import Channel
    from gateway.smartapi.flexibility import FlexibilityForecast

    forecast = await ams.next_message(Channel.FORECAST)
    assert isinstance(forecast, FlexibilityForecast)
    notification = ams.notification_for(forecast)
    n = await ams.send(notification, via=via)
    activation = ams.activation_for(notification, forecast, fraction=0.5)
    a = await ams.send(activation, via=via)
    verification = await ams.next_message(Channel.VERIFICATION)
    return {
        "forecast": forecast.id,
        "notification": {"id": notification.id, "status": n.answer.status},
        "activation": {
            "id": activation.id,
            "status": a.answer.status,
            "p_kw": activation.p_kw,
            "latency_ms": round(a.latency_ms, 2),
        },
        "verification": verification.id,
    }
