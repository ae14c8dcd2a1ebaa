"""The JSON-lines channel between the driver and its worker process.

One JSON object per line. Requests carry an `id` and an `op`; the worker answers each with
the same `id` and either a result or `error`. Lines without `id` are spontaneous (`report`).

Values cross as JSON: MMS structures become objects keyed by component name, arrays become
lists, and three tagged objects carry what JSON has no type for:

    {"$bits": [true, false, ...]}      a bit string, bit 0 first (quality, Dbpos)
    {"$utc_ms": 1700000000123, "$tq": 10}   a UtcTime and its time quality octet
    {"$error": 10}                     a data access error for this component

Errors: `{"error": {"link": true, "message": ...}}` means the connection is gone (the
driver raises LinkError); `{"error": {"code": 21, "message": ...}}` is the IED's refusal of
this request only.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]

#: ops the worker understands
CONNECT = "connect"
READ = "read"
WRITE = "write"
CONTROL = "control"
REPORTS = "reports"
EXIT = "exit"


def encode(message: Message) -> bytes:
    return (json.dumps(message, separators=(",", ":"), allow_nan=True) + "\n").encode()


def decode(line: bytes) -> Message:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"channel message is not an object: {line[:80]!r}")
    return message


def link_error(message: str) -> Message:
    return {"error": {"link": True, "message": message}}


def ied_error(code: int, message: str) -> Message:
    return {"error": {"code": code, "message": message}}
