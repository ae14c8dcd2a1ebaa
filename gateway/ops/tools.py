"""The operator's `mgms` commands against a running gateway.

`mgms point read ID...` and `mgms point write ID VALUE` go through the gateway's
operations listener (gateway.ops.points_api) with the operator's token; the listener's
address and the token file come from the gateway config, so on the gateway's box

    sudo -u mgms mgms point write --config /etc/mgms/gateway.yaml bess1.p_set 15

writes like any other write (checked, audited, limits enforced). `mgms smartapi read|write`
builds a Smart API access request, signs it with a key file and sends it to a gateway's
access endpoint over HTTPS with mutual TLS, as an operator's tool or an AMS would, and
prints the answer (checked against a trust file when one is given).
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import re
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from gateway.errors import GatewayError
from gateway.loader import load_config
from gateway.ops.server import read_token

if TYPE_CHECKING:
    from gateway.smartapi.encode import AnyMessage
    from gateway.smartapi.messages import Method, Request

DEFAULT_CONFIG = Path("/etc/mgms/gateway.yaml")
TIMEOUT_S = 15.0
TURTLE = "text/turtle"


class ToolError(Exception):
    """What the command says on stderr before it exits 1."""


def parse_value(text: str) -> float | int | bool:
    """A command value from the command line: true/false (on/off), an integer or a number."""
    lowered = text.strip().lower()
    if lowered in {"true", "on"}:
        return True
    if lowered in {"false", "off"}:
        return False
    if re.fullmatch(r"[+-]?\d+", lowered):
        return int(lowered)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", lowered):
        value = float(lowered)
        if math.isfinite(value):
            return value
    raise argparse.ArgumentTypeError(f"not a number or true/false: {text!r}")


# -- mgms point ---------------------------------------------------------------------------


def _ops_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The listener's base URL and the operator's token: as given, else from the config."""
    url, token_file = args.url, args.token_file
    if url is None or token_file is None:
        ops = load_config(args.config).gateway.ops
        if not ops.enabled:
            raise ToolError(f"{args.config}: ops.enabled is false; the gateway has no listener")
        host = f"[{ops.listen}]" if ":" in ops.listen else ops.listen
        url = url or f"http://{host}:{ops.port}"
        token_file = token_file or ops.operator_token_file
    return url.rstrip("/"), read_token(token_file) if token_file is not None else None


def _call(url: str, token: str | None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"error": text.strip() or exc.reason}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolError(f"cannot reach the gateway at {url}: {reason}") from exc


def _fmt(value: object) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


def _point_line(p: dict[str, Any]) -> str:
    value = f"{_fmt(p['value'])} {p['unit']}"
    age = "" if p["age_s"] is None else f"age {p['age_s']} s"
    line = f"{p['id']:<24} {value:<20} {p['quality']:<28} {age}".rstrip()
    command = p.get("command")
    if command:
        line += (
            f"  last command: {_fmt(command['value'])} {command['status']} at "
            f"{command['time']} by {command['origin']}"
        )
    return line


def cmd_point_read(args: argparse.Namespace) -> int:
    base, token = _ops_target(args)
    query = urlencode([("id", i) for i in args.ids])
    status, body = _call(f"{base}/api/points?{query}", token)
    if status != 200:
        raise ToolError(f"read refused (HTTP {status}): {body.get('error', body)}")
    if args.json:
        print(json.dumps(body))
    else:
        for p in body["points"]:
            print(_point_line(p))
    return 0


def cmd_point_write(args: argparse.Namespace) -> int:
    base, token = _ops_target(args)
    url = f"{base}/api/points/{quote(args.id, safe='')}"
    status, body = _call(url, token, {"value": args.value, "by": args.by})
    if args.json:
        print(json.dumps(body))
    if "error" in body:
        raise ToolError(f"write of {args.id} refused (HTTP {status}): {body['error']}")
    if not args.json:
        print(
            f"{body['point']} = {_fmt(body['value'])} {body['unit']}: {body['status']}"
            + (f" ({body['detail']})" if body["detail"] else "")
        )
    return 0 if body["confirmed"] else 1


# -- mgms smartapi ------------------------------------------------------------------------


# The `mgms smartapi` functions import the Smart API stack (rdflib, pyoxigraph, cryptography)
# when they run: every `mgms` command, `mgms run` too, builds these parsers.


def build_request(args: argparse.Namespace, method: Method) -> Request:
    from gateway.smartapi.encode import der_iri, device_iri
    from gateway.smartapi.messages import (
        Activity,
        Entity,
        Method,
        Request,
        ValueObject,
        new_message_id,
    )

    iri = der_iri(args.microgrid, args.der) if args.der else device_iri(args.microgrid, args.device)
    if method is Method.READ:
        values = tuple(ValueObject(point=p) for p in args.point)
    else:
        values = (ValueObject(point=args.point, unit=args.unit, value=args.value),)
    return Request(
        id=new_message_id(),
        sender=args.sender,
        generated_at=datetime.now(UTC),
        activities=(Activity(method=method, entities=(Entity(iri=iri, value_objects=values),)),),
    )


def _signed(args: argparse.Namespace, request: Request) -> bytes:
    from gateway.smartapi.codec import media_format, serialize
    from gateway.smartapi.encode import to_tree
    from gateway.smartapi.security.keys import Identity
    from gateway.smartapi.security.profile import OutboundSecurity

    sealer = OutboundSecurity(Identity.from_file(args.key_id, args.sender, args.signing_key))
    return serialize(sealer.seal(to_tree(request)), media_format(TURTLE))


def _send(args: argparse.Namespace, body: bytes) -> tuple[int, bytes, str]:
    from gateway.north.config import TlsFiles
    from gateway.north.tls import client_context
    from gateway.smartapi.access import ACCESS_PATH

    tls = TlsFiles(ca=tuple(args.ca), cert=args.cert, key=args.key)
    url = args.url.rstrip("/") + ACCESS_PATH
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": TURTLE, "Accept": TURTLE}
    )
    try:
        with urllib.request.urlopen(
            request, timeout=TIMEOUT_S, context=client_context(tls)
        ) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolError(f"cannot reach the gateway at {url}: {reason}") from exc


def _answer(args: argparse.Namespace, body: bytes, content_type: str) -> AnyMessage:
    from gateway.smartapi.codec import decode, prepare
    from gateway.smartapi.decode import decode_graph
    from gateway.smartapi.security.keys import TrustStore
    from gateway.smartapi.security.profile import InboundSecurity

    if args.trust is None:
        return decode(body, content_type)
    opener = InboundSecurity(trust=TrustStore.from_file(args.trust), replay=None)
    return decode_graph(prepare(opener.open(body, content_type)))


def _print_answer(answer: AnyMessage, request: Request, verified: bool) -> int:
    from gateway.smartapi.messages import ErrorMessage, Response

    if isinstance(answer, ErrorMessage):
        print(f"refused ({answer.code}): {answer.message}", file=sys.stderr)
        return 1
    if not isinstance(answer, Response):
        print(f"unexpected answer: a {type(answer).__name__}", file=sys.stderr)
        return 1
    if answer.in_reply_to != request.id:
        print(f"the answer is to {answer.in_reply_to}, not to {request.id}", file=sys.stderr)
        return 1
    note = "signature verified" if verified else "signature not checked (no --trust)"
    print(f"# answer {answer.id} from {answer.sender}, {note}")
    for activity in answer.activities:
        for entity in activity.entities:
            for vo in entity.value_objects:
                fields = [
                    f"{activity.method.value.lower():<6}",
                    entity.iri,
                    vo.point or "-",
                    _fmt(vo.value),
                    vo.unit or "",
                    "" if vo.quality is None else str(vo.quality),
                    "" if vo.time is None else vo.time.isoformat(),
                ]
                print(" ".join(f for f in fields if f))
    return 0


def cmd_smartapi(args: argparse.Namespace) -> int:
    from gateway.smartapi.messages import Method

    method = Method.READ if args.smartapi_command == "read" else Method.WRITE
    request = build_request(args, method)
    status, body, content_type = _send(args, _signed(args, request))
    try:
        answer = _answer(args, body, content_type)
    except GatewayError as exc:
        raise ToolError(
            f"HTTP {status}, an answer that is not a valid Smart API message: {exc}"
        ) from exc
    return _print_answer(answer, request, verified=args.trust is not None)


# -- wiring -------------------------------------------------------------------------------


def _login() -> str:
    """The login name as the audit trail takes it (letters, digits, _.@-)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in a container
        return "operator"
    return re.sub(r"[^A-Za-z0-9_.@\-]", "_", name)[:64] or "operator"


def _ops_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="the gateway config (ops listener)"
    )
    p.add_argument("--url", help="the ops listener (default from the config: http://HOST:PORT)")
    p.add_argument(
        "--token-file", type=Path, help="(default from the config: ops.operator_token_file)"
    )
    p.add_argument("--json", action="store_true", help="print the gateway's JSON answer")


def _smartapi_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the gateway's HTTPS base URL")
    p.add_argument("--microgrid", required=True, help="the microgrid id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--der", help="the entity: a DER (or the coupling point) by id")
    which.add_argument("--device", help="the entity: a device by id (points without DER)")
    p.add_argument("--sender", required=True, help="our Smart API identity (generatedBy)")
    p.add_argument("--key-id", required=True, help="the signing key's id in the trust file")
    p.add_argument("--signing-key", type=Path, required=True, help="PEM private key")
    p.add_argument("--ca", type=Path, action="append", required=True, help="CA of the gateway")
    p.add_argument("--cert", type=Path, required=True, help="our TLS client certificate")
    p.add_argument("--key", type=Path, required=True, help="its private key")
    p.add_argument("--trust", type=Path, help="trust file to verify the gateway's answer")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("point", help="read or write points of the running gateway")
    points = p.add_subparsers(dest="point_command", required=True)
    read = points.add_parser("read", help="latest readings (and last commands)")
    read.add_argument("ids", nargs="+", metavar="ID")
    _ops_arguments(read)
    read.set_defaults(func=_guarded(cmd_point_read))
    write = points.add_parser("write", help="write a value in the point's own unit")
    write.add_argument("id", metavar="ID")
    write.add_argument("value", type=parse_value, metavar="VALUE")
    write.add_argument(
        "--by", default=_login(), help="who writes, for the audit trail (default: your login)"
    )
    _ops_arguments(write)
    write.set_defaults(func=_guarded(cmd_point_write))

    p = sub.add_parser("smartapi", help="signed Smart API access requests to a gateway")
    smartapi = p.add_subparsers(dest="smartapi_command", required=True)
    read = smartapi.add_parser("read", help="read an entity's points")
    _smartapi_arguments(read)
    read.add_argument("--point", action="append", default=[], help="only these points")
    read.set_defaults(func=_guarded(cmd_smartapi))
    write = smartapi.add_parser("write", help="write one point of an entity")
    _smartapi_arguments(write)
    write.add_argument("--point", required=True, help="the point to write")
    write.add_argument("--value", type=parse_value, required=True)
    write.add_argument("--unit", required=True, help="QUDT unit name, e.g. KiloW")
    write.set_defaults(func=_guarded(cmd_smartapi))


def _guarded(fn: Any) -> Any:
    """Errors the operator can act on become one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            result: int = fn(args)
        except (ToolError, GatewayError, ValueError) as exc:
            print(f"mgms {args.command}: {exc}", file=sys.stderr)
            return 1
        return result

    return run
