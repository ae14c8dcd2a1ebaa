"""IEC 60870-5-101/104 quality descriptors mapped onto the gateway's Quality.

QDS (measured values, single and double points) and BCR (integrated totals) bits as in
IEC 60870-5-101 7.2.6.3 and 7.2.6.9. Mapping, in the spirit of IEC 61850-80-1:

    IV  invalid            -> invalid
    NT  not topical        -> questionable + old
    SB  substituted        -> questionable + substituted
    BL  blocked            -> questionable + blocked
    OV  overflow           -> questionable + overflow
    CY  counter carry      -> questionable + overflow      (integrated totals)
    CA  counter adjusted   -> questionable + inconsistent  (integrated totals)

IV dominates; every other flag is kept alongside it.
"""

from __future__ import annotations

import enum

from gateway.model import GOOD, Quality, QualityFlag, Validity


class Qds(enum.IntFlag):
    OV = 0x01
    BL = 0x10
    SB = 0x20
    NT = 0x40
    IV = 0x80


class Bcr(enum.IntFlag):
    CY = 0x20
    CA = 0x40
    IV = 0x80


_QDS_FLAGS = {
    Qds.NT: QualityFlag.OLD,
    Qds.SB: QualityFlag.SUBSTITUTED,
    Qds.BL: QualityFlag.BLOCKED,
    Qds.OV: QualityFlag.OVERFLOW,
}
_BCR_FLAGS = {Bcr.CY: QualityFlag.OVERFLOW, Bcr.CA: QualityFlag.INCONSISTENT}


def _quality(invalid: bool, flags: frozenset[QualityFlag]) -> Quality:
    if invalid:
        return Quality(Validity.INVALID, flags)
    if flags:
        return Quality(Validity.QUESTIONABLE, flags)
    return GOOD


def from_qds(bits: int) -> Quality:
    qds = Qds(bits & sum(Qds))
    flags = frozenset(f for bit, f in _QDS_FLAGS.items() if bit in qds)
    return _quality(Qds.IV in qds, flags)


def from_bcr(bits: int) -> Quality:
    bcr = Bcr(bits & sum(Bcr))
    flags = frozenset(f for bit, f in _BCR_FLAGS.items() if bit in bcr)
    return _quality(Bcr.IV in bcr, flags)


def describe(bits: int, counter: bool) -> str:
    """The set bits as their standard mnemonics, e.g. 'IV NT'."""
    flag_type: type[Qds] | type[Bcr] = Bcr if counter else Qds
    names = [f.name for f in sorted(flag_type, key=lambda f: -f.value) if f.value & bits]
    return " ".join(n for n in names if n)
