"""IEC 60870-5-104 discovery: every information object an outstation sends after general
and counter interrogation (and while listening), drafted as a read point with its type,
causes and value. The protocol carries no units, scales or meanings, so the draft says so
instead of guessing; and commands cannot be discovered at all (an outstation never
announces them), so they come from the `--command` list, with their return information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.discover.draft import Draft, DraftDevice, DraftPoint
from gateway.errors import DiscoveryError
from gateway.protocols.base import AddressError, PointTyping
from gateway.protocols.iec104 import Iec104Address, TypeId, parse

#: causes of transmission (IEC 60870-5-101 7.2.3) by number
CAUSES = {
    1: "periodic",
    2: "background",
    3: "spontaneous",
    5: "requested",
    11: "return (remote command)",
    12: "return (local command)",
    20: "interrogated by station",
    37: "counter interrogation",
}


def cause_name(cot: int) -> str:
    if 21 <= cot <= 36:
        return f"interrogated by group {cot - 20}"
    if 38 <= cot <= 41:
        return f"counter group {cot - 37}"
    return CAUSES.get(cot, f"cause {cot}")


@dataclass(frozen=True)
class Seen:
    """What arrived for one information object (plain values, from drivers.iec104)."""

    common_address: int
    ioa: int
    type_id: int
    value: float | int | bool | None
    cot: int
    time_tagged: bool


@dataclass
class _Object:
    ca: int
    ioa: int
    types: list[int] = field(default_factory=list)
    causes: list[int] = field(default_factory=list)
    value: float | int | bool | None = None


def parse_commands(texts: Sequence[str]) -> list[Iec104Address]:
    """`--command` values: `CA/IOA/C_TYPE` (write) or `CA/IOA/M_TYPE+IOA/C_TYPE` (its return
    information, then the command: read-write)."""
    out = []
    for text in texts:
        direction = "read-write" if "+" in text else "write"
        try:
            out.append(parse(text, PointTyping(direction=direction)))
        except AddressError as exc:
            raise DiscoveryError(f"--command {text!r}: {exc}") from None
    return out


def check_stations(
    requested: Sequence[int], seen: Sequence[Seen], notes: Sequence[str] = ()
) -> None:
    """Every common address asked for (`--ca`) sent at least one object: an outstation
    that rejects the interrogation of a CA it does not have may still send its own
    stations' periodic data, and a draft of those is not what was asked for."""
    sent = sorted({s.common_address for s in seen})
    silent = [ca for ca in requested if ca not in sent]
    if not silent:
        return
    why = "; ".join(notes) or "interrogation confirmed"
    others = ", ".join(map(str, sent)) if sent else "none"
    raise DiscoveryError(
        f"no information object of common address {', '.join(map(str, silent))} ({why});"
        f" common addresses the outstation sent: {others}: check --ca"
    )


def check_commands(seen: Sequence[Seen], commands: Sequence[Iec104Address]) -> None:
    """The `--command` options agree with what the outstation sent: a command object has
    an address of its own, and its return information has the type that was received."""
    received: dict[tuple[int, int], set[int]] = {}
    for s in seen:
        received.setdefault((s.common_address, s.ioa), set()).add(s.type_id)

    def as_received(ca: int, ioa: int) -> str:
        return "/".join(sorted(_type_name(t) for t in received[(ca, ioa)]))

    for command in commands:
        ca = command.common_address
        assert command.command is not None
        ioa = command.command.ioa
        if (ca, ioa) in received:
            raise DiscoveryError(
                f"--command '{command}': IOA {ioa} of CA {ca} was received as"
                f" {as_received(ca, ioa)}: a command object has an IOA of its own"
                " (give that object as its return information: CA/IOA/M_TYPE+IOA/C_TYPE)"
            )
        monitor = command.monitor
        if monitor is None or (ca, monitor.ioa) not in received:
            continue  # not received: the draft lists it and drafts it as given
        if monitor.type_id not in received[(ca, monitor.ioa)]:
            raise DiscoveryError(
                f"--command '{command}': its return information {ca}/{monitor.ioa} was"
                f" received as {as_received(ca, monitor.ioa)}, not {monitor.type_id.name}"
            )


def _type_name(type_id: int) -> str:
    return TypeId(type_id).name if type_id in TypeId.__members__.values() else f"type {type_id}"


def draft_outstation(
    seen: Sequence[Seen],
    commands: Sequence[Iec104Address],
    *,
    connection: dict[str, Any],
    origin: str,
    device_id: str,
    notes: Sequence[str] = (),
) -> Draft:
    draft = Draft(origin=origin)
    objects: dict[tuple[int, int], _Object] = {}
    for s in seen:
        obj = objects.setdefault((s.common_address, s.ioa), _Object(s.common_address, s.ioa))
        if s.type_id not in obj.types:
            obj.types.append(s.type_id)
        if s.cot not in obj.causes:
            obj.causes.append(s.cot)
        obj.value = s.value
    returns = {(c.common_address, c.monitor.ioa): c for c in commands if c.monitor is not None}
    points: list[DraftPoint] = []
    for (ca, ioa), obj in sorted(objects.items()):
        known = [t for t in obj.types if t in TypeId.__members__.values()]
        if not known:
            draft.unmapped.append(f"CA {ca} IOA {ioa}: type {obj.types} not supported")
            continue
        type_id = TypeId(known[0])
        causes = ", ".join(f"{cause_name(c)} ({c})" for c in obj.causes)
        found = f"{'/'.join(TypeId(t).name for t in known)}: {causes}; read {obj.value}"
        command = returns.pop((ca, ioa), None)
        if command is not None:
            points.append(_command_point(device_id, command, f"{found}; with its command"))
            continue
        fields = {
            "id": f"{device_id}.ca{ca}.ioa{ioa}",
            "address": f"{ca}/{ioa}/{type_id.name}",
            "unit": "UNITLESS",
            "description": f"{type_id.name} at CA {ca} IOA {ioa}",
        }
        points.append(DraftPoint(fields, found))
    for command in commands:
        if command.monitor is not None and (command.common_address, command.monitor.ioa) in returns:
            draft.unmapped.append(
                f"--command {command}: its return information was not received; drafted as given"
            )
        if command.monitor is None or (command.common_address, command.monitor.ioa) in returns:
            points.append(_command_point(device_id, command, "from --command (not discovered)"))
    draft.remarks += [
        "IEC 104 carries no units, scales or meanings: every point is drafted UNITLESS,"
        " scale 1 and without a role. Set unit, scale (normalized and scaled values!),"
        " der and quantity from the outstation's signal list",
        "commands cannot be discovered: an outstation never announces them."
        + (
            f" {len(commands)} command(s) drafted from --command"
            if commands
            else " Give them with --command CA/IOA/C_TYPE (or RETURN+COMMAND)"
        ),
        *notes,
    ]
    draft.devices.append(
        DraftDevice(
            id=device_id,
            protocol="iec104",
            connection=connection,
            description="IEC 60870-5-104 outstation",
            timeout=2.0,
            points=points,
            notes=[f"stations (common addresses): {sorted({o.ca for o in objects.values()})}"],
        )
    )
    return draft


def _command_point(device_id: str, command: Iec104Address, found: str) -> DraftPoint:
    assert command.command is not None
    target = command.monitor or command.command
    fields: dict[str, Any] = {
        "id": f"{device_id}.ca{command.common_address}.ioa{target.ioa}",
        "address": str(command),
        "unit": "UNITLESS",
        "direction": "read-write" if command.monitor is not None else "write",
        "description": f"{command.command.type_id.name} command",
    }
    return DraftPoint(fields, f"{found}; set write limits and sbo before use")
