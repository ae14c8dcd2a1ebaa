"""`mgms discover PROTOCOL TARGET -o FILE`: write a draft mapping for a device."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.discover.draft import Draft, render
from gateway.errors import DiscoveryError, GatewayError, LinkError
from gateway.loader import check_files


def _units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unit ids are numbers separated by commas: {text!r}"
        ) from None
    if not units or any(not 1 <= u <= 247 for u in units):
        raise argparse.ArgumentTypeError(f"unit ids are 1..247: {text!r}")
    return units


def _units_any(text: str) -> tuple[int, ...]:
    """Numbers 1..65534 separated by commas (IEC 104 common addresses)."""
    try:
        values = tuple(int(u) for u in text.split(",") if u.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"numbers separated by commas: {text!r}") from None
    if not values or any(not 1 <= v <= 65534 for v in values):
        raise argparse.ArgumentTypeError(f"common addresses are 1..65534: {text!r}")
    return values


def _ders(text: str) -> tuple[dict[int, str], str | None]:
    """`bess3` (every unit) or `1=bess3,2=pv2` (per unit)."""
    if "=" not in text:
        return {}, text
    out: dict[int, str] = {}
    for item in text.split(","):
        unit, _, der = item.partition("=")
        if not unit.strip().isdigit() or not der.strip():
            raise argparse.ArgumentTypeError(f"--der expects DER or UNIT=DER,...: {text!r}")
        out[int(unit)] = der.strip()
    return out, None


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise SystemExit(f"target {text!r}: expected HOST or HOST:PORT")
    return host, int(port)


def add_parsers(sub: Any) -> None:
    """Register `discover` on the `mgms` subcommands."""
    p = sub.add_parser("discover", help="read a device and write a draft mapping file")
    protocols = p.add_subparsers(dest="protocol", required=True)
    m = protocols.add_parser("modbus", help="SunSpec discovery over Modbus TCP")
    m.add_argument("target", metavar="HOST[:PORT]", help="the device (port 502 by default)")
    m.add_argument("-o", "--output", type=Path, required=True, help="draft mapping to write")
    m.add_argument(
        "--units", type=_units, default=(1,), help="unit ids to probe, e.g. 1,2,126 (default 1)"
    )
    m.add_argument("--device-id", help="id of the drafted device (default: from model 1)")
    m.add_argument(
        "--der",
        type=_ders,
        default=({}, None),
        metavar="DER | UNIT=DER,...",
        help="DER id for points with a role, or one per unit (1=bess3,2=pv2);"
        " default: the device id",
    )
    m.add_argument("--timeout", type=float, default=1.0, help="seconds per request")
    m.set_defaults(func=_cmd_discover_modbus)

    i = protocols.add_parser("iec61850", help="browse an IEC 61850 MMS server")
    i.add_argument("target", metavar="HOST[:PORT]", help="the IED (port 102 by default)")
    i.add_argument("-o", "--output", type=Path, required=True, help="draft mapping to write")
    i.add_argument("--device-id", help="id of the drafted device (default: from the IED)")
    i.add_argument("--der", help="DER id for points with a role (default: the device id)")
    i.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    i.set_defaults(func=_cmd_discover_iec61850)

    c = protocols.add_parser("iec104", help="interrogate an IEC 60870-5-104 outstation")
    c.add_argument("target", metavar="HOST[:PORT]", help="the outstation (port 2404 by default)")
    c.add_argument("-o", "--output", type=Path, required=True, help="draft mapping to write")
    c.add_argument(
        "--ca", type=_units_any, default=(1,), help="common addresses to interrogate (default 1)"
    )
    c.add_argument(
        "--command",
        action="append",
        default=[],
        metavar="CA/IOA/C_TYPE | CA/IOA/M_TYPE+IOA/C_TYPE",
        help="a command to draft (commands cannot be discovered); repeatable",
    )
    c.add_argument("--listen", type=float, default=2.0, help="seconds to wait for more data")
    c.add_argument("--device-id", default="rtu", help="id of the drafted device (default rtu)")
    c.add_argument("--timeout", type=float, default=2.0, help="seconds per confirmation")
    c.set_defaults(func=_cmd_discover_iec104)

    d = protocols.add_parser("dlms", help="read a DLMS/COSEM meter's object list")
    d.add_argument("target", metavar="HOST[:PORT]", help="the meter (port 4059 by default)")
    d.add_argument("-o", "--output", type=Path, required=True, help="draft mapping to write")
    d.add_argument("--client-address", type=int, default=16, help="client SAP (default 16)")
    d.add_argument("--server-address", type=int, default=1, help="server SAP (default 1)")
    d.add_argument("--auth", choices=("none", "low", "high"), default="none")
    d.add_argument("--password-file", type=Path, help="LLS password file (--auth low)")
    d.add_argument("--keys-file", type=Path, help="HLS keys file (--auth high)")
    d.add_argument("--system-title", help="the gateway's system title, 16 hex digits (HLS)")
    d.add_argument("--device-id", default="meter", help="id of the drafted device")
    d.add_argument("--der", help="DER (or coupling point) the meter measures")
    d.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    d.set_defaults(func=_cmd_discover_dlms)

    imp = sub.add_parser("import", help="draft a mapping from an engineering file")
    kinds = imp.add_subparsers(dest="kind", required=True)
    scl = kinds.add_parser("scl", help="IEC 61850 SCL (ICD, CID, SCD): one IED")
    scl.add_argument("file", type=Path, help="the SCL file")
    scl.add_argument("-o", "--output", type=Path, required=True, help="draft mapping to write")
    scl.add_argument("--ied", help="the IED to draft (required when the file has several)")
    scl.add_argument("--host", help="the IED's address (default: from Communication)")
    scl.add_argument("--port", type=int, default=102, help="MMS port (default 102)")
    scl.add_argument("--device-id", help="id of the drafted device (default: the IED name)")
    scl.add_argument("--der", help="DER id for points with a role (default: the device id)")
    scl.set_defaults(func=_cmd_import_scl)


def _origin() -> str:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    return f"mgms {shlex.join(sys.argv[1:])} at {when}"


def _write(draft: Draft, output: Path, elapsed: float) -> int:
    output.write_text(render(draft))
    problems = check_files([output])
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{output}: {draft.summary()} in {elapsed:.3f} s")
    if problems:
        print(f"the draft does not pass `mgms check`: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: `mgms check {output}` passes")
    return 0


def _cmd_discover_modbus(args: argparse.Namespace) -> int:
    from drivers.modbus.scan import RegisterScanner
    from gateway.discover import modbus

    host, port = _host_port(args.target, 502)
    target = modbus.ModbusTarget(host, port, args.units, args.timeout)

    async def run() -> Draft | modbus.RangeReport:
        scanner = RegisterScanner(host, port, args.timeout)
        await scanner.connect()
        try:
            return await modbus.discover(
                scanner,
                target,
                origin=_origin(),
                device_id=args.device_id,
                der=args.der[1],
                der_of_unit=args.der[0],
            )
        finally:
            await scanner.close()

    started = time.perf_counter()
    try:
        result = asyncio.run(run())
    except (DiscoveryError, LinkError) as exc:
        print(f"discover modbus {args.target}: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    if isinstance(result, modbus.RangeReport):
        print(result.render())
        return 3
    return _write(result, args.output, elapsed)


def _cmd_discover_iec61850(args: argparse.Namespace) -> int:
    from drivers.iec61850.browsing import browse_ied
    from gateway.discover import iec61850
    from gateway.discover.modbus import slug

    host, port = _host_port(args.target, 102)
    started = time.perf_counter()
    try:
        browsed = asyncio.run(browse_ied(host, port, args.timeout, within=60 + args.timeout))
        lds = sorted(browsed["lds"])
        name = lds[0] if lds else f"{host}:{port}"
        model = iec61850.from_browse(name, browsed)
    except (DiscoveryError, LinkError) as exc:
        print(f"discover iec61850 {args.target}: {exc}", file=sys.stderr)
        return 1
    device_id = args.device_id or slug(name, "ied")
    draft = iec61850.draft_ied(
        model,
        connection={"host": host, "port": port},
        origin=_origin(),
        device_id=device_id,
        der=args.der or device_id,
    )
    return _write(draft, args.output, time.perf_counter() - started)


def _cmd_import_scl(args: argparse.Namespace) -> int:
    from gateway.discover import iec61850, scl
    from gateway.discover.modbus import slug

    started = time.perf_counter()
    try:
        ied = scl.load_ied(args.file, args.ied)
    except DiscoveryError as exc:
        print(f"import scl: {exc}", file=sys.stderr)
        return 1
    host = args.host or ied.host
    if host is None:
        print(
            f"import scl: {args.file}: no IP address for IED {ied.model.name!r}: give --host",
            file=sys.stderr,
        )
        return 1
    device_id = args.device_id or slug(ied.model.name, "ied")
    draft = iec61850.draft_ied(
        ied.model,
        connection={"host": host, "port": args.port},
        origin=_origin(),
        device_id=device_id,
        der=args.der or device_id,
    )
    return _write(draft, args.output, time.perf_counter() - started)


def _cmd_discover_iec104(args: argparse.Namespace) -> int:
    from drivers.iec104.scan import scan
    from gateway.discover import iec104

    host, port = _host_port(args.target, 2404)
    started = time.perf_counter()
    try:
        commands = iec104.parse_commands(args.command)
        seen, notes = scan(host, port, args.ca, args.timeout, args.listen)
    except (DiscoveryError, LinkError) as exc:
        print(f"discover iec104 {args.target}: {exc}", file=sys.stderr)
        return 1
    if not seen:
        print(f"discover iec104 {args.target}: no information object received", file=sys.stderr)
        return 1
    draft = iec104.draft_outstation(
        seen,
        commands,
        connection={"host": host, "port": port},
        origin=_origin(),
        device_id=args.device_id,
        notes=notes,
    )
    return _write(draft, args.output, time.perf_counter() - started)


def _cmd_discover_dlms(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from drivers.dlms.scan import describe_meter
    from gateway.discover import dlms
    from gateway.protocols.dlms import DlmsOptions

    host, port = _host_port(args.target, 4059)
    raw: dict[str, object] = {
        "client_address": args.client_address,
        "server_address": args.server_address,
        "authentication": args.auth,
    }
    if args.system_title:
        raw["system_title"] = args.system_title
    for name, path in (("password_file", args.password_file), ("keys_file", args.keys_file)):
        if path is not None:
            raw[name] = str(path.resolve())
    try:
        options = DlmsOptions.model_validate(raw, context={"base_dir": str(Path.cwd())})
    except ValidationError as exc:
        print(f"discover dlms: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    try:
        objects = describe_meter(host, port, options, args.timeout)
    except GatewayError as exc:
        print(f"discover dlms {args.target}: {exc}", file=sys.stderr)
        return 1
    # secret files are relative to the mapping file in a mapping
    for name in ("password_file", "keys_file"):
        if name in raw:
            raw[name] = os.path.relpath(str(raw[name]), args.output.resolve().parent)
    draft = dlms.draft_meter(
        objects,
        connection={"host": host, "port": port},
        options=raw,
        origin=_origin(),
        device_id=args.device_id,
        der=args.der or args.device_id,
    )
    return _write(draft, args.output, time.perf_counter() - started)
