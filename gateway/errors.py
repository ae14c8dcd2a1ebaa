"""Every error the gateway raises on purpose, in one tree.

    GatewayError
    ├── ConfigError              a config or mapping file is wrong (carries every Problem found)
    ├── DriverError              something between the gateway and a field device
    │   ├── LinkError            the link is down or timed out; the caller reconnects
    │   │   └── RequestTimeout   one request got no answer within the device timeout
    │   ├── DeviceRejected       the device answered with a refusal (exception, negative confirm)
    │   └── DecodeError          the device answered something that does not decode
    ├── CommandError             a command was refused before anything was sent
    │   ├── UnknownPoint         no such point id
    │   ├── NotWritable          the point is read-only
    │   └── LimitViolation       the value is outside the point's write limits
    ├── RawRangeError            a value does not fit a protocol data type (e.g. 70000 as int16)
    ├── StoreError               the SQLite store failed
    └── FlexError                a flexibility function could not run
        └── SolverError          the LP solver failed (an infeasible plan is a result, not this)

Third-party exceptions are translated into these at one boundary (the driver adapter or the
loader); anything that reaches an operator names the file, device, point or field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error raised by the gateway on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config or mapping file, located as precisely as known."""

    file: str
    message: str
    line: int | None = None
    device: str | None = None
    point: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.device:
            parts.append(f"device {self.device!r}")
        if self.point:
            parts.append(f"point {self.point!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        return ": ".join([", ".join(parts), self.message])


class ConfigError(GatewayError):
    """A config or mapping file is invalid; `problems` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DriverError(GatewayError):
    """Failure talking to a field device; `device` names it."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"device {device!r}: {message}")


class LinkError(DriverError):
    """The link to the device is down or a request timed out; reconnect and retry."""


class RequestTimeout(LinkError):
    """A request got no answer within the device timeout (the link may still be up)."""


class DeviceRejected(DriverError):
    """The device refused a request (e.g. a Modbus exception response)."""


class DecodeError(DriverError):
    """The device's answer could not be decoded."""


class CommandError(GatewayError):
    """A command was refused by the gateway before anything was sent to a device."""

    def __init__(self, point: str, message: str) -> None:
        self.point = point
        super().__init__(f"point {point!r}: {message}")


class UnknownPoint(CommandError):
    """No point with this id is mapped."""


class NotWritable(CommandError):
    """The point's direction does not allow writes."""


class LimitViolation(CommandError):
    """The value lies outside the point's write limits."""


class RawRangeError(GatewayError, ValueError):
    """A value cannot be encoded in a protocol data type; raised by the codecs before
    anything is sent."""


class StoreError(GatewayError):
    """The SQLite store failed."""


class FlexError(GatewayError):
    """A flexibility function (forecast, schedule, control, verification) could not run."""


class SolverError(FlexError):
    """The LP solver failed or gave no usable answer; `problem` names the LP."""

    def __init__(self, problem: str, message: str) -> None:
        self.problem = problem
        super().__init__(f"{problem}: {message}")
