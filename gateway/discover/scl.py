"""`mgms import scl FILE`: an IED's data model from an SCL file (ICD, CID, SCD), drafted as
discovery drafts a browsed IED (gateway/discover/iec61850.py).

The XML is parsed with defusedxml: a DTD, entity declarations and external references are
refused, so a hostile file cannot expand entities or make the parser read other files.

From the file: the IED's logical devices (MMS domain = IED name + LDevice inst, or its
ldName), their logical nodes (prefix + lnClass + inst) and, through DataTypeTemplates, every
data attribute with its functional constraint and basic type; controls (an `Oper` in CO)
with ctlModel from the instance (DOI/DAI) or the template's value; units (SIUnit,
multiplier) where the instance or template gives them; data sets (FCDAs) and report control
blocks; the address from Communication.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException, DTDForbidden

from gateway.discover.iec61850 import Control, IedModel, Leaf
from gateway.errors import DiscoveryError

_FCS = frozenset({"MX", "ST", "SP", "CF", "CO"})
_B_TYPES = {
    "FLOAT32": "float32",
    "BOOLEAN": "bool",
    "Dbpos": "dbpos",
    "INT8": "int32",
    "INT16": "int32",
    "INT32": "int32",
    "INT8U": "int32",
    "INT16U": "int32",
    "Enum": "int32",
}
_CTL_MODELS = {
    "status-only": 0,
    "direct-with-normal-security": 1,
    "sbo-with-normal-security": 2,
    "direct-with-enhanced-security": 3,
    "sbo-with-enhanced-security": 4,
}
#: SIUnit enumeration names (IEC 61850-7-3) -> codes, and multiplier names -> exponents
_SI_UNITS = {
    "none": 1,
    "s": 4,
    "A": 5,
    "degC": 23,
    "°C": 23,
    "V": 29,
    "Hz": 33,
    "W": 38,
    "VA": 61,
    "VAr": 63,
    "VAh": 71,
    "Wh": 72,
    "VArh": 73,
}
_MULTIPLIERS = {"": 0, "m": -3, "k": 3, "M": 6, "G": 9}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: Element, name: str) -> Iterator[Element]:
    return (child for child in element if _local(child.tag) == name)


def _child(element: Element, name: str) -> Element | None:
    return next(_children(element, name), None)


def _val(element: Element | None) -> str | None:
    if element is None:
        return None
    value = _child(element, "Val")
    return None if value is None or value.text is None else value.text.strip()


@dataclass
class _Templates:
    ln_types: dict[str, Element] = field(default_factory=dict)
    do_types: dict[str, Element] = field(default_factory=dict)
    da_types: dict[str, Element] = field(default_factory=dict)


def _read(path: Path) -> Element:
    try:
        tree = safe_xml.parse(str(path), forbid_dtd=True)
    except DTDForbidden as exc:
        raise DiscoveryError(
            f"{path}: refused: the file declares a DTD (<!DOCTYPE {exc.name}>): SCL needs"
            " none, and its entities could expand without bound or read other files"
        ) from None
    except DefusedXmlException as exc:  # entities or external references without a DTD
        raise DiscoveryError(f"{path}: refused: {type(exc).__name__}: {exc}") from None
    except ParseError as exc:
        raise DiscoveryError(f"{path}: not well-formed XML: {exc}") from None
    except OSError as exc:
        raise DiscoveryError(f"{path}: {exc.strerror or exc}") from None
    root = tree.getroot()
    if root is None or _local(root.tag) != "SCL":
        found = "nothing" if root is None else repr(_local(root.tag))
        raise DiscoveryError(f"{path}: root element is {found}, not SCL")
    return root


def ied_names(root: Element) -> list[str]:
    return [ied.get("name", "") for ied in _children(root, "IED")]


@dataclass(frozen=True)
class SclIed:
    model: IedModel
    host: str | None


def load_ied(path: Path, ied: str | None) -> SclIed:
    """The named IED of an SCL file (or its only IED)."""
    root = _read(path)
    names = ied_names(root)
    if not names:
        raise DiscoveryError(f"{path}: no IED in the file")
    if ied is None:
        if len(names) > 1:
            raise DiscoveryError(
                f"{path}: {len(names)} IEDs, choose one with --ied: {', '.join(names)}"
            )
        ied = names[0]
    element = next((e for e in _children(root, "IED") if e.get("name") == ied), None)
    if element is None:
        raise DiscoveryError(f"{path}: no IED {ied!r} (the file has {', '.join(names)})")
    templates = _Templates()
    types = _child(root, "DataTypeTemplates")
    if types is not None:
        for kind, into in (
            ("LNodeType", templates.ln_types),
            ("DOType", templates.do_types),
            ("DAType", templates.da_types),
        ):
            for t in _children(types, kind):
                into[t.get("id", "")] = t
    model = IedModel(ied)
    for ldevice in element.iter():
        if _local(ldevice.tag) != "LDevice":
            continue
        ld = ldevice.get("ldName") or f"{ied}{ldevice.get('inst', '')}"
        for ln in ldevice:
            if _local(ln.tag) not in ("LN0", "LN"):
                continue
            _logical_node(path, model, templates, ld, ln)
            _data_sets(model, ied, ld, ln)
    return SclIed(model, _host(root, ied))


def _ln_name(element: Element) -> str:
    return f"{element.get('prefix', '')}{element.get('lnClass', '')}{element.get('inst', '')}"


def _data_sets(model: IedModel, ied: str, ld: str, ln: Element) -> None:
    """The node's DataSets (members as `LD/LN.DO@FC`, with `.da` when an FCDA names an
    attribute) and its report control blocks."""
    name = _ln_name(ln)
    for data_set in _children(ln, "DataSet"):
        members = []
        for fcda in _children(data_set, "FCDA"):
            member_ld = f"{ied}{fcda.get('ldInst', '')}"
            member_ln = f"{fcda.get('prefix', '')}{fcda.get('lnClass', '')}{fcda.get('lnInst', '')}"
            reference = f"{member_ld}/{member_ln}.{fcda.get('doName', '')}"
            if fcda.get("daName"):
                reference += f".{fcda.get('daName')}"
            members.append(f"{reference}@{fcda.get('fc', '')}")
        model.data_sets[f"{ld}/{name}.{data_set.get('name', '')}"] = members
    for control in _children(ln, "ReportControl"):
        kind = "BR" if control.get("buffered") == "true" else "RP"
        model.reports[f"{ld}/{name}.{kind}.{control.get('name', '')}"] = (
            f"{ld}/{name}.{control.get('datSet', '')}"
        )


def _host(root: Element, ied: str) -> str | None:
    for ap in root.iter():
        if _local(ap.tag) == "ConnectedAP" and ap.get("iedName") == ied:
            address = _child(ap, "Address")
            for p in _children(address, "P") if address is not None else ():
                if p.get("type") == "IP" and p.text:
                    return p.text.strip()
    return None


def _logical_node(path: Path, model: IedModel, t: _Templates, ld: str, ln: Element) -> None:
    name = _ln_name(ln)
    ln_type = t.ln_types.get(ln.get("lnType", ""))
    if ln_type is None:
        raise DiscoveryError(f"{path}: {ld}/{name}: lnType {ln.get('lnType')!r} not defined")
    instances = {doi.get("name", ""): doi for doi in _children(ln, "DOI")}
    for do in _children(ln_type, "DO"):
        do_name = do.get("name", "")
        _data_object(
            path, model, t, ld, name, (do_name,), do.get("type", ""), instances.get(do_name)
        )


def _data_object(
    path: Path,
    model: IedModel,
    t: _Templates,
    ld: str,
    ln: str,
    names: tuple[str, ...],
    type_id: str,
    instance: Element | None,
) -> None:
    do_type = t.do_types.get(type_id)
    where = f"{ld}/{ln}." + ".".join(names)
    if do_type is None:
        raise DiscoveryError(f"{path}: {where}: DOType {type_id!r} not defined")
    inst = {
        e.get("name", ""): e for e in (instance if instance is not None else []) if e.get("name")
    }
    status_kind = None
    oper: Element | None = None
    for item in do_type:
        kind, item_name = _local(item.tag), item.get("name", "")
        if kind == "SDO":
            _data_object(
                path,
                model,
                t,
                ld,
                ln,
                (*names, item_name),
                item.get("type", ""),
                inst.get(item_name),
            )
            continue
        if kind != "DA" or item.get("fc") not in _FCS:
            continue
        fc = item.get("fc", "")
        if item_name == "ctlModel" and len(names) == 1:
            continue  # read below with the control
        if item_name == "units" and fc == "CF":
            _units(model, t, f"{ld}/{ln}.{names[0]}", item, inst.get("units"))
            continue
        if fc == "CO":
            if item_name == "Oper":
                oper = item
            continue
        try:
            attributes = list(_attributes(t, item))
        except _UndefinedType as exc:
            raise DiscoveryError(f"{path}: {where}: {exc}") from None
        for attr_path, b_type in attributes:
            leaf_kind = _B_TYPES.get(b_type, b_type)
            model.leaves.append(Leaf(ld, ln, fc, (*names, *attr_path), leaf_kind))
            if fc == "ST" and attr_path == ("stVal",):
                status_kind = leaf_kind
    if oper is not None and len(names) == 1:
        ctl_val = _ctl_val_kind(t, oper)
        if ctl_val == "bool" and status_kind == "dbpos":
            ctl_val = "dbpos"
        text = _val(inst.get("ctlModel")) or _val(_child_named(do_type, "DA", "ctlModel")) or ""
        ctl_model = _CTL_MODELS.get(text, 1)
        model.controls.append(Control(ld, ln, names[0], ctl_val, ctl_model))


def _child_named(element: Element, tag: str, name: str) -> Element | None:
    return next((c for c in _children(element, tag) if c.get("name") == name), None)


class _UndefinedType(Exception):
    """A DA names a DAType the file does not define (named with the data object above)."""


def _attributes(t: _Templates, da: Element) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, basic type) of every leaf below a DA (BDAs of Struct types)."""
    name, b_type = da.get("name", ""), da.get("bType", "")
    if b_type != "Struct":
        yield (name,), b_type
        return
    da_type = t.da_types.get(da.get("type", ""))
    if da_type is None:
        raise _UndefinedType(f"DAType {da.get('type')!r} of {name!r} not defined")
    for bda in _children(da_type, "BDA"):
        for sub, sub_type in _attributes(t, bda):
            yield (name, *sub), sub_type


def _ctl_val_kind(t: _Templates, oper: Element) -> str:
    oper_type = t.da_types.get(oper.get("type", ""))
    ctl_val = _child_named(oper_type, "BDA", "ctlVal") if oper_type is not None else None
    if ctl_val is None:
        return "bool"
    leaves = dict(_attributes(t, ctl_val))
    if ("ctlVal", "f") in leaves:
        return "float32"
    if ("ctlVal", "i") in leaves:
        return "int32"
    return _B_TYPES.get(leaves.get(("ctlVal",), "BOOLEAN"), "bool")


def _units(model: IedModel, t: _Templates, do: str, da: Element, inst: Element | None) -> None:
    values: dict[str, Any] = {}
    da_type = t.da_types.get(da.get("type", ""))
    for bda in _children(da_type, "BDA") if da_type is not None else ():
        values[bda.get("name", "")] = _val(bda)
    for dai in _children(inst, "DAI") if inst is not None else ():
        values[dai.get("name", "")] = _val(dai)
    si_text, multiplier_text = values.get("SIUnit") or "", values.get("multiplier") or ""
    unit, multiplier = _SI_UNITS.get(si_text), _MULTIPLIERS.get(multiplier_text)
    if unit is not None and multiplier is not None:
        model.units[do] = (unit, multiplier)
    elif si_text or multiplier_text:  # a guessed unit is drafted: the head says so
        model.odd_units[do] = f"SIUnit {si_text!r} multiplier {multiplier_text!r}"
