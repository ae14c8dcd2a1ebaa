"""`mgms discover PROTOCOL TARGET -o FILE`: write a draft mapping for a device."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.discover.draft import Draft, render
from gateway.errors import DiscoveryError, DriverError, GatewayError, LinkError
from gateway.loader import check_files
from gateway.mapping import ID_PATTERN

_DIGITS = re.compile(r"[0-9]+")  # not int()'s grammar: it takes "1_0" and non-ASCII digits


def _ids(text: str, what: str, low: int, high: int) -> tuple[int, ...]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or not all(_DIGITS.fullmatch(item) for item in items):
        raise argparse.ArgumentTypeError(f"{what} are numbers separated by commas: {text!r}")
    values = tuple(int(item) for item in items)
    if any(not low <= v <= high for v in values):
        raise argparse.ArgumentTypeError(f"{what} are {low}..{high}: {text!r}")
    return values


def _units(text: str) -> tuple[int, ...]:
    return _ids(text, "unit ids", 1, 247)


def _units_any(text: str) -> tuple[int, ...]:
    """IEC 104 common addresses."""
    return _ids(text, "common addresses", 1, 65534)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"a number of seconds, not {text!r}")
    return value


def _seconds(text: str) -> float:
    """A timeout: seconds > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"seconds > 0, not {text!r}")
    return value


def _listen_seconds(text: str) -> float:
    """How long to listen: seconds >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"seconds >= 0, not {text!r}")
    return value


def _mapping_id(text: str) -> str:
    """A device or DER id as mapping files have them (checked before any connection)."""
    if not re.fullmatch(ID_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is no id: a letter, then up to 63 letters, digits, '_', '.' or '-'"
        )
    return text


def _ders(text: str) -> tuple[dict[int, str], str | None]:
    """`bess3` (every unit) or `1=bess3,2=pv2` (per unit)."""
    if "=" not in text:
        return {}, _mapping_id(text)
    out: dict[int, str] = {}
    for item in text.split(","):
        unit, _, der = item.partition("=")
        if not _DIGITS.fullmatch(unit.strip()) or not der.strip():
            raise argparse.ArgumentTypeError(f"--der expects DER or UNIT=DER,...: {text!r}")
        out[int(unit)] = _mapping_id(der.strip())
    return out, None


@dataclass(frozen=True)
class Target:
    """HOST[:PORT] of a device to discover."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str) -> int:
    if not _DIGITS.fullmatch(text) or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"a port is a number 1..65535, not {text!r}")
    return int(text)


def _target(default_port: int) -> Callable[[str], Target]:
    """The argparse type of a TARGET: HOST, HOST:PORT, [IPv6] or [IPv6]:PORT."""

    def parse(text: str) -> Target:
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not host or (rest and not rest.startswith(":")):
                raise argparse.ArgumentTypeError(f"expected [IPv6] or [IPv6]:PORT: {text!r}")
            port = rest[1:] if rest else str(default_port)
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        else:  # a host name, an IPv4 address or a bare IPv6 address
            host, port = text, str(default_port)
        if not host.strip():
            raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT: {text!r}")
        try:
            return Target(host, _port(port))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected HOST or HOST:PORT with a port 1..65535: {text!r}"
            ) from None

    return parse


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="draft mapping to write (a new file)"
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite FILE if it exists (a reviewed mapping!)"
    )


def _output_problem(args: argparse.Namespace) -> str | None:
    """Why the draft cannot be written to `-o`, found before any connection: a mapping
    someone reviewed is never overwritten unasked."""
    output: Path = args.output
    if output.is_dir():
        return f"-o {output}: is a directory; give the file to write"
    if output.exists() and not args.force:
        return f"-o {output}: the file exists; give --force to overwrite it"
    if not output.parent.is_dir():
        return f"-o {output}: no directory {output.parent}"
    return None


def _output_first(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """`command`, once `-o` is known to be writable: exit 2 before any connection if not."""

    def run(args: argparse.Namespace) -> int:
        problem = _output_problem(args)
        if problem is not None:
            what = f"discover {args.protocol}" if "protocol" in args else f"import {args.kind}"
            print(f"{what}: {problem}", file=sys.stderr)
            return 2
        return command(args)

    return run


def add_parsers(sub: Any) -> None:
    """Register `discover` on the `mgms` subcommands."""
    p = sub.add_parser("discover", help="read a device and write a draft mapping file")
    protocols = p.add_subparsers(dest="protocol", required=True)
    m = protocols.add_parser("modbus", help="SunSpec discovery over Modbus TCP")
    m.add_argument(
        "target", type=_target(502), metavar="HOST[:PORT]", help="the device (port 502 by default)"
    )
    _add_output(m)
    m.add_argument(
        "--units", type=_units, default=(1,), help="unit ids to probe, e.g. 1,2,126 (default 1)"
    )
    m.add_argument(
        "--device-id", type=_mapping_id, help="id of the drafted device (default: from model 1)"
    )
    m.add_argument(
        "--der",
        type=_ders,
        default=({}, None),
        metavar="DER | UNIT=DER,...",
        help="DER id for points with a role, or one per unit (1=bess3,2=pv2);"
        " default: the device id",
    )
    m.add_argument("--timeout", type=_seconds, default=1.0, help="seconds per request")
    m.set_defaults(func=_output_first(_cmd_discover_modbus))

    i = protocols.add_parser("iec61850", help="browse an IEC 61850 MMS server")
    i.add_argument(
        "target", type=_target(102), metavar="HOST[:PORT]", help="the IED (port 102 by default)"
    )
    _add_output(i)
    i.add_argument(
        "--device-id", type=_mapping_id, help="id of the drafted device (default: from the IED)"
    )
    i.add_argument(
        "--der", type=_mapping_id, help="DER id for points with a role (default: the device id)"
    )
    i.add_argument("--timeout", type=_seconds, default=2.0, help="seconds per request")
    i.set_defaults(func=_output_first(_cmd_discover_iec61850))

    c = protocols.add_parser("iec104", help="interrogate an IEC 60870-5-104 outstation")
    c.add_argument(
        "target",
        type=_target(2404),
        metavar="HOST[:PORT]",
        help="the outstation (port 2404 by default)",
    )
    _add_output(c)
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
    c.add_argument(
        "--listen", type=_listen_seconds, default=2.0, help="seconds to wait for more data"
    )
    c.add_argument(
        "--device-id",
        type=_mapping_id,
        default="rtu",
        help="id of the drafted device (default rtu)",
    )
    c.add_argument("--timeout", type=_seconds, default=2.0, help="seconds per confirmation")
    c.set_defaults(func=_output_first(_cmd_discover_iec104))

    d = protocols.add_parser("dlms", help="read a DLMS/COSEM meter's object list")
    d.add_argument(
        "target", type=_target(4059), metavar="HOST[:PORT]", help="the meter (port 4059 by default)"
    )
    _add_output(d)
    d.add_argument("--client-address", type=int, default=16, help="client SAP (default 16)")
    d.add_argument("--server-address", type=int, default=1, help="server SAP (default 1)")
    d.add_argument("--auth", choices=("none", "low", "high"), default="none")
    d.add_argument("--password-file", type=Path, help="LLS password file (--auth low)")
    d.add_argument("--keys-file", type=Path, help="HLS keys file (--auth high)")
    d.add_argument("--system-title", help="the gateway's system title, 16 hex digits (HLS)")
    d.add_argument(
        "--device-id", type=_mapping_id, default="meter", help="id of the drafted device"
    )
    d.add_argument("--der", type=_mapping_id, help="DER (or coupling point) the meter measures")
    d.add_argument(
        "--coupling-point",
        type=_mapping_id,
        default="pcc",
        help="the site's id of the coupling point (default pcc): a --der other than it"
        " gets its active power with scale -1 (meters count import positive)",
    )
    d.add_argument("--timeout", type=_seconds, default=2.0, help="seconds per request")
    d.set_defaults(func=_output_first(_cmd_discover_dlms))

    imp = sub.add_parser("import", help="draft a mapping from an engineering file")
    kinds = imp.add_subparsers(dest="kind", required=True)
    scl = kinds.add_parser("scl", help="IEC 61850 SCL (ICD, CID, SCD): one IED")
    scl.add_argument("file", type=Path, help="the SCL file")
    _add_output(scl)
    scl.add_argument("--ied", help="the IED to draft (required when the file has several)")
    scl.add_argument("--host", help="the IED's address (default: from Communication)")
    scl.add_argument("--port", type=_port, default=102, help="MMS port (default 102)")
    scl.add_argument(
        "--device-id", type=_mapping_id, help="id of the drafted device (default: the IED name)"
    )
    scl.add_argument(
        "--der", type=_mapping_id, help="DER id for points with a role (default: the device id)"
    )
    scl.set_defaults(func=_output_first(_cmd_import_scl))


def _origin() -> str:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    return f"mgms {shlex.join(sys.argv[1:])} at {when}"


def _failed(what: str, exc: GatewayError) -> None:
    """Why discovery failed, under the command and target the user typed: a driver's own
    name for the device (a placeholder during discovery) would only repeat or confuse."""
    reason = str(exc)
    if isinstance(exc, DriverError):
        reason = reason.removeprefix(f"device {exc.device!r}: ")
    print(f"{what}: {reason}", file=sys.stderr)


def _write(draft: Draft, output: Path, elapsed: float) -> int:
    try:
        output.write_text(render(draft))
    except OSError as exc:  # e.g. a directory the user may not write to
        print(f"-o {output}: cannot write the draft: {exc.strerror or exc}", file=sys.stderr)
        return 1
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

    der_of_unit: dict[int, str] = args.der[0]
    if der_of_unit and set(der_of_unit) != set(args.units):
        print(
            f"discover modbus: --der gives DERs for units {sorted(der_of_unit)}"
            f" but --units probes {list(args.units)}: give one DER per probed unit",
            file=sys.stderr,
        )
        return 2
    host, port = args.target.host, args.target.port
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

    # pymodbus logs every unanswered probe with a hex dump; the summary says it once
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    started = time.perf_counter()
    try:
        result = asyncio.run(run())
    except (DiscoveryError, LinkError) as exc:
        _failed(f"discover modbus {args.target}", exc)
        return 1
    elapsed = time.perf_counter() - started
    if isinstance(result, modbus.RangeReport):
        if set(result.silent) == set(args.units):
            print(
                f"discover modbus {args.target}: no answer from unit(s)"
                f" {', '.join(map(str, args.units))} within {args.timeout:g} s:"
                " check --units and that this is a Modbus TCP device",
                file=sys.stderr,
            )
            return 1
        print(result.render())
        return 3
    return _write(result, args.output, elapsed)


def _cmd_discover_iec61850(args: argparse.Namespace) -> int:
    from drivers.iec61850.browsing import browse_ied
    from gateway.discover import iec61850
    from gateway.discover.modbus import slug

    host, port = args.target.host, args.target.port
    started = time.perf_counter()
    try:
        browsed = asyncio.run(browse_ied(host, port, args.timeout, within=60 + args.timeout))
        lds = sorted(browsed["lds"])
        name = lds[0] if lds else f"{host}:{port}"
        model = iec61850.from_browse(name, browsed)
    except (DiscoveryError, LinkError) as exc:
        _failed(f"discover iec61850 {args.target}", exc)
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

    host, port = args.target.host, args.target.port
    started = time.perf_counter()
    try:
        commands = iec104.parse_commands(args.command)
        seen, notes = scan(host, port, args.ca, args.timeout, args.listen)
        iec104.check_stations(args.ca, seen, notes)
        iec104.check_commands(seen, commands)
    except (DiscoveryError, LinkError) as exc:
        _failed(f"discover iec104 {args.target}", exc)
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


#: DlmsOptions field -> the `discover dlms` option that gives it
_DLMS_OPTIONS = {
    "client_address": "--client-address",
    "server_address": "--server-address",
    "authentication": "--auth",
    "password_file": "--password-file",
    "keys_file": "--keys-file",
    "system_title": "--system-title",
}


def _dlms_option_error(error: Mapping[str, Any]) -> str:
    """A DlmsOptions validation error in the command's terms: the option, not the field."""
    message = str(error["msg"]).removeprefix("Value error, ")
    for field, name in _DLMS_OPTIONS.items():
        message = message.replace(field, name)
    loc = error.get("loc") or ()
    option = _DLMS_OPTIONS.get(str(loc[0])) if loc else None
    return f"{option} {error.get('input')!r}: {message}" if option else message


def _cmd_discover_dlms(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from drivers.dlms.protocol import DlmsOptions
    from drivers.dlms.scan import describe_meter
    from gateway.discover import dlms

    host, port = args.target.host, args.target.port
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
        for error in exc.errors():
            print(f"discover dlms: {_dlms_option_error(error)}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    try:
        objects = describe_meter(host, port, options, args.timeout)
    except GatewayError as exc:
        _failed(f"discover dlms {args.target}", exc)
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
        coupling_point=args.coupling_point if args.der else None,
    )
    return _write(draft, args.output, time.perf_counter() - started)
