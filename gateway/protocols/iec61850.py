"""IEC 61850 MMS addressing: an object reference plus a functional constraint.

    LD0/MMXU1.TotW.mag.f@MX        a measured value (its DO's q and t come along)
    LD0/ZBAT1.SoC.mag.f@MX
    LD0/DRCC1.DERStr.stVal@ST      a status (type bool, int32 or dbpos)
    LD0/DRCC1.VarSpt.setMag.f@SP   a set point written as an attribute (SP or CF)
    LD0/DRCC1.WSpt@CO              a control object (APC, SPC, DPC, INC by `type`)

The reference is `logical device / logical node . data object(s) . data attribute(s)`;
data object names start upper case and attribute names lower case, as IEC 61850-7-2
names them, which is how the DO (the owner of `q` and `t`) is found in a path; the
phase sub-objects of WYE and DEL (phsA, ..., neut, net, res, phsAB, ...) are the
lower-case exceptions.

Controls name the data object; the point's `type` picks the CDC (float32 APC, int32 INC,
bool SPC, dbpos DPC), `sbo` picks select-before-operate, and the device option
`enhanced_security` picks enhanced or normal security. Reading a control point reads its
status: `mxVal` (MX) of an APC, `stVal` (ST) of the others.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.protocols.base import Address, AddressError, PointTyping, ProtocolSpec

_LD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_LN = re.compile(r"^(LLN0|[A-Za-z0-9_]{0,11}[A-Z]{4}[0-9]{0,12})$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
#: sub data objects of the WYE and DEL CDCs: data objects despite their lower-case names
_PHASE_OBJECTS = frozenset(
    {"phsA", "phsB", "phsC", "neut", "net", "res", "phsAB", "phsBC", "phsCA"}
)


class Fc(enum.StrEnum):
    """The functional constraints a point may use."""

    MX = "MX"  # measurands
    ST = "ST"  # status
    SP = "SP"  # set points (written as attributes)
    CF = "CF"  # configuration
    CO = "CO"  # controls (operated, not written)

    @property
    def writable(self) -> bool:
        return self in (Fc.SP, Fc.CF, Fc.CO)


class DataType(enum.StrEnum):
    BOOL = "bool"
    INT32 = "int32"
    FLOAT32 = "float32"
    DBPOS = "dbpos"  # double point: intermediate, off, on, bad


class ControlCdc(enum.StrEnum):
    APC = "APC"
    INC = "INC"
    SPC = "SPC"
    DPC = "DPC"


_CONTROL_CDC = {
    DataType.FLOAT32: ControlCdc.APC,
    DataType.INT32: ControlCdc.INC,
    DataType.BOOL: ControlCdc.SPC,
    DataType.DBPOS: ControlCdc.DPC,
}


@dataclass(frozen=True)
class ObjectRef:
    """`LD/LN.DO[.SDO...]` — a data object (or sub data object) of a logical node."""

    ld: str
    ln: str
    data_object: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.ld}/{self.ln}.{'.'.join(self.data_object)}"


@dataclass(frozen=True)
class Iec61850Address(Address):
    obj: ObjectRef
    attribute: tuple[str, ...]  # empty for a control object
    fc: Fc
    data_type: DataType

    @property
    def reference(self) -> str:
        """The full object reference without the FC (what the MMS client is given)."""
        return ".".join((str(self.obj), *self.attribute))

    @property
    def is_control(self) -> bool:
        return self.fc is Fc.CO

    @property
    def control_cdc(self) -> ControlCdc:
        return _CONTROL_CDC[self.data_type]

    @property
    def read_fc(self) -> Fc:
        """The FC a read of this point uses (a control reads its status)."""
        if not self.is_control:
            return self.fc
        return Fc.MX if self.control_cdc is ControlCdc.APC else Fc.ST

    @property
    def read_attribute(self) -> tuple[str, ...]:
        """The attribute path inside the DO that a read of this point returns."""
        if not self.is_control:
            return self.attribute
        cdc = self.control_cdc
        if cdc is ControlCdc.APC:
            return ("mxVal", "f")
        return ("stVal",)

    def conflicts_with(self, other: Address) -> bool:
        if not isinstance(other, Iec61850Address):
            return False
        return (self.obj, self.attribute, self.fc) == (other.obj, other.attribute, other.fc)

    def __str__(self) -> str:
        return f"{self.reference}@{self.fc.value}"


_MMS_NAME = re.compile(r"^([^/$@]+/[^/$@]+)\$([A-Z]{2})\$([^@]+)$")


def _no_mms_names(text: str, field: str) -> None:
    """MMS '$' names are refused first, with the reference they stand for where it shows."""
    if "$" not in text:
        return
    hint = ""
    mms = _MMS_NAME.match(text.strip())
    if mms is not None:
        ln, fc, rest = mms.groups()
        hint = f" (here: {ln}.{rest.replace('$', '.')}@{fc})"
    raise AddressError(
        field, f"{text!r}: write the reference with '.' and '@FC', not MMS '$' names{hint}"
    )


def parse_object_ref(text: str, field: str = "address") -> tuple[ObjectRef, tuple[str, ...]]:
    """Split `LD/LN.DO...da...` into the data object and its attribute path."""
    _no_mms_names(text, field)
    ld, slash, rest = text.partition("/")
    if not slash:
        raise AddressError(field, f"{text!r} must be 'LD/LN.DataObject[.attribute]'")
    if not _LD.match(ld):
        raise AddressError(field, f"logical device name {ld!r} is not valid")
    parts = rest.split(".")
    ln, names = parts[0], parts[1:]
    if not _LN.match(ln):
        raise AddressError(
            field,
            f"logical node {ln!r} is not valid (prefix, 4-letter class, instance: e.g. MMXU1)",
        )
    if not names:
        raise AddressError(field, f"{text!r} names no data object after {ln!r}")
    objects: list[str] = []
    attrs: list[str] = []
    for name in names:
        if not _NAME.match(name):
            raise AddressError(field, f"{name!r} in {text!r} is not a valid name")
        if name[0].isupper() or (name in _PHASE_OBJECTS and objects and not attrs):
            if attrs:
                raise AddressError(
                    field, f"data object {name!r} follows data attribute {attrs[-1]!r}"
                )
            objects.append(name)
        else:
            if not objects:
                raise AddressError(field, f"{text!r}: attribute {name!r} before any data object")
            attrs.append(name)
    return ObjectRef(ld, ln, tuple(objects)), tuple(attrs)


def _split_fc(text: str, field: str) -> tuple[str, Fc]:
    _no_mms_names(text, field)
    ref, at, fc_s = text.strip().rpartition("@")
    if not at:
        raise AddressError(field, f"{text!r} needs a functional constraint, e.g. '...@MX'")
    try:
        fc = Fc(fc_s.upper())
    except ValueError:
        raise AddressError(
            field, f"functional constraint {fc_s!r} not supported (one of {', '.join(Fc)})"
        ) from None
    return ref, fc


def _data_type(attribute: tuple[str, ...], fc: Fc, declared: str | None) -> DataType:
    implied = {"f": DataType.FLOAT32, "i": DataType.INT32}.get(attribute[-1]) if attribute else None
    if declared is None:
        if implied is not None:
            return implied
        if fc is Fc.CO:
            raise AddressError(
                "type",
                "a control needs a type: float32 (APC), int32 (INC), bool (SPC), dbpos (DPC)",
            )
        raise AddressError(
            "type", f"attribute {attribute[-1]!r} needs a type (one of {', '.join(DataType)})"
        )
    try:
        data_type = DataType(declared)
    except ValueError:
        raise AddressError(
            "type", f"unknown data type {declared!r} (one of {', '.join(DataType)})"
        ) from None
    if implied is not None and data_type is not implied:
        raise AddressError(
            "type", f"attribute {attribute[-1]!r} holds {implied.value}, not {data_type.value}"
        )
    return data_type


def parse(text: str, typing: PointTyping) -> Iec61850Address:
    for name, value in (
        ("word_order", typing.word_order),
        ("byte_order", typing.byte_order),
        ("bit", typing.bit),
    ):
        if value is not None:
            raise AddressError(name, f"`{name}` does not apply to iec61850 points")
    ref, fc = _split_fc(text, "address")
    obj, attribute = parse_object_ref(ref)
    if fc is Fc.CO and attribute:
        raise AddressError(
            "address",
            f"a control names its data object ({obj}@CO), not the attribute "
            f"{'.'.join(attribute)!r}",
        )
    if fc is not Fc.CO and not attribute:
        raise AddressError(
            "address", f"{obj}@{fc.value} names no data attribute (e.g. {obj}.mag.f@{fc.value})"
        )
    if attribute[:1] in (("setMag",), ("setVal",)) and fc not in (Fc.SP, Fc.CF):
        raise AddressError(
            "address",
            f"{attribute[0]!r} is a set point attribute: its functional constraint is SP"
            f" (or CF), not {fc.value} (e.g. {obj}.{'.'.join(attribute)}@SP)",
        )
    if typing.direction != "read" and not fc.writable:
        raise AddressError(
            "direction",
            f"{fc.value} attributes are read-only in IEC 61850: map the set point as its SP or"
            " CF attribute (e.g. ...setMag.f@SP) or as a control (@CO), or make it read",
        )
    return Iec61850Address(obj, attribute, fc, _data_type(attribute, fc, typing.type))


def parse_fcd(text: str) -> tuple[ObjectRef, Fc]:
    """A data set member: a data object with its FC, e.g. `LD0/MMXU1.TotW@MX`."""
    ref, fc = _split_fc(text, "members")
    obj, attribute = parse_object_ref(ref, "members")
    if attribute:
        raise AddressError(
            "members",
            f"{text!r}: a member names a data object (so value, q and t come together), "
            "not an attribute",
        )
    if fc not in (Fc.MX, Fc.ST):
        raise AddressError("members", f"{text!r}: data set members are MX or ST, not {fc.value}")
    return obj, fc


_DATA_SET_REF = re.compile(
    r"^([A-Za-z][A-Za-z0-9_]{0,63})/([A-Za-z0-9_]{1,32})\.([A-Za-z0-9_]{1,32})$"
)
_RCB_REF = re.compile(
    r"^([A-Za-z][A-Za-z0-9_]{0,63})/([A-Za-z0-9_]{1,32})\.(RP|BR)\.([A-Za-z0-9_]{1,32})$"
)


class DataSetOptions(BaseModel):
    """A data set the IED defines: its members are read in one request, and its report
    control block (if given) pushes them spontaneously."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: `LD/LN.Name`, e.g. LD0/LLN0.Measurements
    reference: str
    #: the members in IED order: data objects with FC, e.g. LD0/MMXU1.TotW@MX
    members: list[str] = Field(min_length=1)
    #: a report control block on this data set, `LD/LN.RP.name` (URCB) or `LD/LN.BR.name`
    report: str | None = None

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not _DATA_SET_REF.match(value):
            raise ValueError(f"data set reference {value!r} must be 'LD/LN.Name'")
        return value

    @field_validator("members")
    @classmethod
    def _members(cls, members: list[str]) -> list[str]:
        seen: set[tuple[ObjectRef, Fc]] = set()
        for member in members:
            try:
                key = parse_fcd(member)
            except AddressError as exc:
                raise ValueError(str(exc)) from None
            if key in seen:
                raise ValueError(f"member {member!r} is listed twice")
            seen.add(key)
        return members

    @model_validator(mode="after")
    def _report_beside_data_set(self) -> DataSetOptions:
        if self.report is None:
            return self
        match = _RCB_REF.match(self.report)
        if match is None:
            raise ValueError(
                f"report {self.report!r} must be 'LD/LN.RP.name' (unbuffered) or "
                "'LD/LN.BR.name' (buffered)"
            )
        ds = _DATA_SET_REF.match(self.reference)
        assert ds is not None
        if match.group(1, 2) != ds.group(1, 2):
            raise ValueError(
                f"report {self.report!r} must sit in the data set's logical node "
                f"{ds.group(1)}/{ds.group(2)}"
            )
        return self

    @property
    def fcds(self) -> list[tuple[ObjectRef, Fc]]:
        return [parse_fcd(m) for m in self.members]

    @property
    def name(self) -> str:
        return self.reference.rpartition(".")[2]

    @property
    def owner(self) -> tuple[str, str]:
        """(logical device, logical node) holding the data set."""
        ld, _, rest = self.reference.partition("/")
        return ld, rest.partition(".")[0]

    @property
    def buffered(self) -> bool:
        return self.report is not None and ".BR." in self.report

    @property
    def report_name(self) -> str | None:
        return None if self.report is None else self.report.rpartition(".")[2]


class Iec61850Options(BaseModel):
    """Device options for an IEC 61850 IED (MMS over TCP, port 102 by default)."""

    model_config = ConfigDict(extra="forbid")

    data_sets: list[DataSetOptions] = Field(default_factory=list)
    #: controls use enhanced security (wait for CommandTermination); else normal security
    enhanced_security: bool = True
    #: originator identification (orIdent) sent with every control
    originator: str = Field(default="mgms", min_length=1, max_length=64)
    #: seconds to reach the IED, worker start included (the library's own connect
    #: timeout is not honoured, so the gateway bounds it)
    connect_timeout: float = Field(default=3.0, gt=0, le=60)
    #: seconds an enhanced-security control waits for its CommandTermination
    termination_timeout: float = Field(default=2.0, gt=0, le=60)
    #: seconds beyond its own request timeouts after which a silent worker is killed
    worker_grace: float = Field(default=1.0, gt=0, le=30)

    @model_validator(mode="after")
    def _unique(self) -> Iec61850Options:
        refs = [d.reference for d in self.data_sets]
        dup = {r for r in refs if refs.count(r) > 1}
        if dup:
            raise ValueError(f"data set {sorted(dup)[0]!r} is listed twice")
        reports = [d.report for d in self.data_sets if d.report]
        dup = {r for r in reports if reports.count(r) > 1}
        if dup:
            raise ValueError(f"report control block {sorted(dup)[0]!r} serves two data sets")
        return self


SPEC = ProtocolSpec(
    name="iec61850",
    driver="drivers.iec61850.driver:Iec61850Driver",
    front_end="fwsim.iec61850_server:Iec61850FrontEnd",
    parse_address=parse,
    options_model=Iec61850Options,
    data_types=frozenset(t.value for t in DataType),
    default_port=102,
)
