"""Values of IEC 104 information objects to and from engineering units. No I/O.

Monitoring: a `Sample` (what one information object carried) becomes a `Reading`.
Commands: an engineering value becomes the raw value of the command type, or an
`RawRangeError` says why it cannot be sent (the command is then never transmitted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from drivers.base import to_engineering, to_raw
from drivers.iec104 import quality
from gateway.errors import RawRangeError
from gateway.mapping import Point
from gateway.model import Quality, QualityFlag, Reading, Validity, utcnow
from gateway.protocols.iec104 import Kind, TypeId

NORMALIZED_MAX = 32767 / 32768  # the largest normalized value, 1 - 2^-15
FLOAT32_MAX = 3.4028234663852886e38

# Double point states (IEC 60870-5-101 7.2.6.2)
DP_INTERMEDIATE, DP_OFF, DP_ON, DP_INDETERMINATE = 0, 1, 2, 3

# Causes of transmission (IEC 60870-5-101 7.2.3) the gateway acts on
COT_PERIODIC = 1
COT_BACKGROUND = 2
COT_SPONTANEOUS = 3
COT_REQUEST = 5
COT_RETURN_REMOTE = 11
COT_RETURN_LOCAL = 12
COT_INTERROGATED = range(20, 37)  # station and group 1..16
COT_COUNTER = range(37, 42)  # general and group 1..4 counter requests

#: causes that report a change or a cyclic value on the outstation's own initiative;
#: answers to the gateway's interrogations and reads only refresh the cache
EVENT_CAUSES = frozenset(
    {COT_PERIODIC, COT_BACKGROUND, COT_SPONTANEOUS, COT_RETURN_REMOTE, COT_RETURN_LOCAL}
)


def is_monitoring_cause(cot: int) -> bool:
    return (
        cot in EVENT_CAUSES or cot == COT_REQUEST or cot in COT_INTERROGATED or (cot in COT_COUNTER)
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One information object as received: plain Python values, no library objects."""

    common_address: int
    ioa: int
    type_id: int
    value: float | int | bool | None
    bits: int  # QDS, or BCR for integrated totals (standard bit positions)
    recorded_at: datetime | None  # the ASDU's CP56Time2a, timezone-aware, or None
    cot: int
    test: bool = False
    negative: bool = False


def decode(point: Point, mapped: TypeId, sample: Sample) -> Reading:
    """The Reading of `point` (mapped with type `mapped`) from one received sample."""
    kind = mapped.kind
    counter = kind is Kind.COUNTER
    q = quality.from_bcr(sample.bits) if counter else quality.from_qds(sample.bits)
    details = []
    if not q.good:
        details.append(f"outstation quality {quality.describe(sample.bits, counter)}")
    value: float | int | bool | None
    raw = sample.value
    if raw is None:
        value, q = None, _worse(q, Validity.INVALID, QualityFlag.FAILURE)
        details.append("value could not be decoded")
    elif kind is Kind.SINGLE:
        value = bool(raw)
    elif kind is Kind.DOUBLE:
        value, q, why = _double(int(raw), q)
        if why:
            details.append(why)
    else:
        value = to_engineering(point, raw)
        if isinstance(value, float) and not math.isfinite(value):
            q = _worse(q, Validity.INVALID, QualityFlag.OUT_OF_RANGE)
            details.append(f"non-finite value {value}")
    return Reading(
        point=point.id,
        value=value,
        unit=point.unit,
        quality=q,
        source_time=sample.recorded_at,
        gateway_time=utcnow(),
        detail="; ".join(details),
    )


def _double(state: int, q: Quality) -> tuple[bool | None, Quality, str]:
    if state == DP_ON:
        return True, q, ""
    if state == DP_OFF:
        return False, q, ""
    if state == DP_INTERMEDIATE:
        return None, _worse(q, Validity.QUESTIONABLE), "intermediate position (00)"
    return None, _worse(q, Validity.INVALID, QualityFlag.INCONSISTENT), "faulty position (11)"


_RANK = {Validity.GOOD: 0, Validity.QUESTIONABLE: 1, Validity.INVALID: 2}


def _worse(q: Quality, validity: Validity, *flags: QualityFlag) -> Quality:
    worst = validity if _RANK[validity] > _RANK[q.validity] else q.validity
    return Quality(worst, q.flags | frozenset(flags))


def encode(point: Point, command: TypeId, value: float | int | bool) -> float | int | bool:
    """The raw value for a command of type `command`; raises RawRangeError."""
    kind = command.kind
    if kind.binary:
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise RawRangeError(f"{command.name} takes on/off (true/false or 1/0), not {value!r}")
    if isinstance(value, bool):
        raise RawRangeError(f"{command.name} takes a number, not {value!r}")
    raw = float(to_raw(point, value))
    if not math.isfinite(raw):
        raise RawRangeError(f"value {value!r} is not a finite number")
    if kind is Kind.NORMALIZED:
        if not -1.0 <= raw <= NORMALIZED_MAX:
            raise RawRangeError(
                f"value {value} is {raw:g} normalized, outside -1..{NORMALIZED_MAX:.6f} "
                "(check the point's scale)"
            )
        return raw
    if kind is Kind.SCALED:
        scaled = round(raw)
        if not -32768 <= scaled <= 32767:
            raise RawRangeError(
                f"value {value} is {scaled} scaled, outside -32768..32767 (check the point's scale)"
            )
        return scaled
    if abs(raw) > FLOAT32_MAX:
        raise RawRangeError(f"value {value} does not fit a short float")
    return raw
