"""A draft mapping file: devices and points as `mgms check` reads them, each point with a
comment saying what it was found as, and a summary of what was found and left unmapped.

Rendered by hand around `yaml.safe_dump` of each value, because YAML libraries drop
comments; every point is one flow mapping on one line, so the draft reads like the
shipped mappings and diffs point by point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass
class DraftPoint:
    #: the mapping fields, in the order they are written
    fields: dict[str, Any]
    #: what the point was found as (one line)
    found_as: str

    @property
    def id(self) -> str:
        return str(self.fields["id"])


@dataclass
class DraftDevice:
    id: str
    protocol: str
    connection: dict[str, Any]
    description: str = ""
    poll_interval: float = 1.0
    timeout: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    points: list[DraftPoint] = field(default_factory=list)
    #: lines written above the device (what it is, where it was found)
    notes: list[str] = field(default_factory=list)


@dataclass
class Draft:
    #: the command that made it and when
    origin: str
    devices: list[DraftDevice] = field(default_factory=list)
    #: things found and not mapped, each "what: why"
    unmapped: list[str] = field(default_factory=list)
    #: general remarks for the commissioning engineer
    remarks: list[str] = field(default_factory=list)

    @property
    def mapped(self) -> int:
        return sum(len(d.points) for d in self.devices)

    def summary(self) -> str:
        with_role = sum(1 for d in self.devices for p in d.points if "quantity" in p.fields)
        return (
            f"drafted {self.mapped} point(s), {with_role} with a role;"
            f" {len(self.unmapped)} finding(s) not mapped"
        )


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000)
    return text.strip().removesuffix("...").strip()


def _comment(text: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines() or [""]]


def render(draft: Draft) -> str:
    """The draft as YAML text with comments."""
    lines = [
        "# Draft mapping written by discovery: check every point before use.",
        *_comment(draft.origin),
        *_comment(draft.summary()),
    ]
    for remark in draft.remarks:
        lines += _comment(remark)
    if draft.unmapped:
        lines.append("# not mapped:")
        lines += [f"#   {item}" for item in draft.unmapped]
    lines.append("devices:")
    for device in draft.devices:
        for note in device.notes:
            lines += _comment(note, "  ")
        lines.append(f"  - id: {_flow(device.id)}")
        lines.append(f"    protocol: {_flow(device.protocol)}")
        if device.description:
            lines.append(f"    description: {_flow(device.description)}")
        lines.append(f"    connection: {_flow(device.connection)}")
        lines.append(f"    poll_interval: {_flow(device.poll_interval)}")
        lines.append(f"    timeout: {_flow(device.timeout)}")
        if device.options:
            lines.append(f"    options: {_flow(device.options)}")
        lines.append("    points:" if device.points else "    points: []")
        for point in device.points:
            lines += _comment(point.found_as, "      ")
            lines.append(f"      - {_flow(point.fields)}")
    return "\n".join(lines) + "\n"
