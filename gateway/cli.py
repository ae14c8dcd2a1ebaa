"""The `mgms` command: run, check, sim, demo, and the operator's tools (gateway.ops.tools)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import LoadedConfig
from gateway.errors import ConfigError, ServiceError, StoreError
from gateway.loader import check_files, load_config
from gateway.ops.install import add_install_arguments, add_uninstall_arguments
from gateway.ops.install import run as run_install
from gateway.ops.logs import setup_logging

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def _port_overrides(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        device, sep, port = item.partition("=")
        if not sep or not port.isdigit():
            raise SystemExit(f"--port expects DEVICE=PORT, got {item!r}")
        out[device] = int(port)
    return out


def _serial_overrides(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        device, sep, path = item.partition("=")
        if not sep or not device or not path:
            raise SystemExit(f"--serial expects DEVICE=PATH, got {item!r}")
        out[device] = path
    return out


def _utc_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _cmd_check(args: argparse.Namespace) -> int:
    problems = check_files(args.files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"ok: {', '.join(str(f) for f in args.files)}")
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from fwsim.runner import run

    config = load_config(args.config, port_overrides=_port_overrides(args.port))
    devices = set(args.device) if args.device else None
    return run(
        config,
        speed=args.speed,
        devices=devices,
        start=args.start,
        serial_ports=_serial_overrides(args.serial),
        failing=frozenset(args.fail),
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import run

    overrides = _port_overrides(args.port)

    def load() -> LoadedConfig:
        return load_config(args.config, port_overrides=overrides, check_keys=True)

    return run(load(), load=load)


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args.config, as_json=args.json)


def _cmd_install(args: argparse.Namespace) -> int:
    return run_install(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgms", description="Microgrid management gateway")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate config and mapping files")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=_cmd_check)

    for name, func, help_ in (
        ("run", _cmd_run, "run the gateway"),
        ("sim", _cmd_sim, "run the field device simulators for a config"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        p.add_argument(
            "--port",
            action="append",
            default=[],
            metavar="DEVICE=PORT",
            help="override a device's TCP port (repeatable)",
        )
        p.set_defaults(func=func)
        if name == "sim":
            p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
            p.add_argument("--device", action="append", default=[], help="serve only these")
            p.add_argument(
                "--start",
                type=_utc_time,
                default=None,
                help="simulated start time, ISO 8601 (default: now)",
            )
            p.add_argument(
                "--serial",
                action="append",
                default=[],
                metavar="DEVICE=PATH",
                help="serve a serial device on PATH, the simulator's end of its line"
                " (e.g. the second pty of a socat pair; repeatable)",
            )
            p.add_argument(
                "--fail",
                action="append",
                default=[],
                metavar="POINT",
                help="answer this point with the protocol's device failure (repeatable)",
            )

    p = sub.add_parser("install", help="install as a systemd service (see docs/deployment.md)")
    add_install_arguments(p)
    p.set_defaults(func=_cmd_install, action="install")
    p = sub.add_parser("uninstall", help="remove the service; keeps config, keys and state")
    add_uninstall_arguments(p)
    p.set_defaults(func=_cmd_install, action="uninstall")

    from gateway.north.commands import add_parsers as add_north_parsers

    add_north_parsers(sub)  # certs init, ams-sim

    from gateway.discover.commands import add_parsers as add_discover_parsers

    add_discover_parsers(sub)  # discover

    from gateway.ops.tools import add_parsers as add_operator_parsers

    add_operator_parsers(sub)  # point read|write, smartapi read|write

    p = sub.add_parser("demo", help="simulators + gateway on loopback, then a summary")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2  # the unit does not restart on 2: only an operator can fix the files
    except (ServiceError, StoreError) as exc:
        print(exc, file=sys.stderr)
        return 1  # e.g. the ops port still taken, the disk full: worth a restart
    return result


if __name__ == "__main__":
    sys.exit(main())
