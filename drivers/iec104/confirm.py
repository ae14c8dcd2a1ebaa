"""Command confirmations as they arrive on the wire, and what they mean. No I/O.

c104's own verdict on a command (the bool of `transmit()` or `interrogation()`) cannot be
trusted alone: its wait for the answer can miss an answer that arrives very fast (then it
reports failure after the full timeout, and a select-before-execute never sends the
execute), and it treats a termination that overtakes the confirmation as a failure. The
driver therefore watches every received APDU that answers a command (cause
activation confirmation or termination, or a negative "unknown ..." cause) and judges
the outcome from those.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

ACT_CON = 7
ACT_TERM = 10
_UNKNOWN_CAUSES = {
    44: "unknown type",
    45: "unknown cause",
    46: "unknown common address",
    47: "unknown IOA",
}
#: command types with a qualifier whose top bit is S/E (select / execute)
_SELECTABLE = frozenset({45, 46, 47, 48, 49, 50})
C_IC_NA_1 = 100
C_CI_NA_1 = 101
C_CS_NA_1 = 103

Key = tuple[int, int, int]
"""(common address, type id, IOA) of a command; IOA 0 for station commands."""


@dataclass(frozen=True, slots=True)
class Confirmation:
    cot: int
    negative: bool
    select: bool  # S/E bit of the echoed command (meaningful for the confirmation only)

    @property
    def cause(self) -> str:
        if self.cot == ACT_CON:
            return "confirmation"
        if self.cot == ACT_TERM:
            return "termination"
        return _UNKNOWN_CAUSES.get(self.cot, f"cause {self.cot}")


def parse(apdu: bytes) -> tuple[Key, Confirmation] | None:
    """The command answered by a received APDU and how, or None for anything else."""
    # APCI: 0x68, length, 4 control octets (I format: bit 0 of the first is 0); then the
    # ASDU: type, VSQ, COT (+P/N 0x40, test 0x80), originator, CA (2), IOA (3), element
    if len(apdu) < 16 or apdu[0] != 0x68 or apdu[1] + 2 != len(apdu) or apdu[2] & 0x01:
        return None
    type_id = apdu[6]
    if not 45 <= type_id <= 127:
        return None
    cot = apdu[8] & 0x3F
    if cot not in (ACT_CON, ACT_TERM) and cot not in _UNKNOWN_CAUSES:
        return None
    ca = apdu[10] | apdu[11] << 8
    ioa = apdu[12] | apdu[13] << 8 | apdu[14] << 16
    select = type_id in _SELECTABLE and bool(apdu[-1] & 0x80)
    return (ca, type_id, ioa), Confirmation(cot, bool(apdu[8] & 0x40), select)


class Verdict(enum.Enum):
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    SELECTED = "selected"  # select confirmed, the execute never answered
    NO_ANSWER = "no answer"


def judge_command(seen: Sequence[Confirmation], select: bool) -> tuple[Verdict, str]:
    """The outcome of a command (select-before-execute if `select`) from its answers."""
    for c in seen:
        if c.negative:
            step = "select" if select and c.select and c.cot == ACT_CON else "command"
            return Verdict.REJECTED, f"negative {c.cause} of the {step}"
    executed = [c for c in seen if c.cot == ACT_CON and not (select and c.select)]
    if executed:
        ended = any(c.cot == ACT_TERM for c in seen)
        return Verdict.CONFIRMED, "" if ended or not select else "confirmed, not terminated"
    if select and any(c.cot == ACT_CON and c.select for c in seen):
        return Verdict.SELECTED, "select confirmed, execute not answered"
    return Verdict.NO_ANSWER, ""


def command_settled(seen: Sequence[Confirmation], select: bool) -> bool:
    """Nothing more to wait for: refused, or confirmed (and, for select-before-execute,
    terminated: the outstation's sequence must end before the next command)."""
    verdict = judge_command(seen, select)[0]
    if verdict is Verdict.REJECTED:
        return True
    terminated = any(c.cot == ACT_TERM for c in seen)
    return verdict is Verdict.CONFIRMED and (terminated or not select)


def judge_interrogation(seen: Sequence[Confirmation]) -> tuple[Verdict, str]:
    """A (counter) interrogation is done when confirmed and terminated."""
    for c in seen:
        if c.negative:
            return Verdict.REJECTED, f"negative {c.cause}"
    confirmed = any(c.cot == ACT_CON for c in seen)
    terminated = any(c.cot == ACT_TERM for c in seen)
    if confirmed and terminated:
        return Verdict.CONFIRMED, ""
    return Verdict.NO_ANSWER, "confirmed, not terminated" if confirmed else ""


def interrogation_settled(seen: Sequence[Confirmation]) -> bool:
    return judge_interrogation(seen)[0] is not Verdict.NO_ANSWER
