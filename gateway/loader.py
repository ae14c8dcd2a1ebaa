"""Reads config and mapping files (YAML) once at start into typed, cross-checked models.

Every problem in every file is collected before failing, each located by file, line,
device, point and field, so an integrator fixes a mapping in one pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway import yamlread
from gateway.config import GatewayConfig, LoadedConfig
from gateway.errors import ConfigError, KeyFileError, Problem
from gateway.mapping import ENERGY_COUNTERS, Device, MappingFile, Point
from gateway.protocols import Address, spec_for
from gateway.protocols.base import AddressError, ProtocolSpec

Loc = tuple[str | int, ...]

#: larger files are refused before reading: a mapping is text of kilobytes, not a log
MAX_FILE_BYTES = 16 * 1024 * 1024
#: nesting deeper than this is not a mapping (the deepest real path is about 8)
MAX_DEPTH = 64
#: YAML nodes visited, aliases followed; stops alias bombs (a few repeated aliases that
#: expand to billions of nodes) and self-referencing aliases
MAX_NODES = 1_000_000


class _Source:
    """A parsed YAML file; the line of a node, addressed by its path, is found when a
    problem needs it (a second pass over the text, only then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = ""
        self._lines: dict[Loc, int] | None = None
        self.data: Any = None

    @property
    def lines(self) -> dict[Loc, int]:
        if self._lines is None:
            self._lines = yamlread.lines(self.text, max_depth=MAX_DEPTH, max_nodes=MAX_NODES)
        return self._lines

    @classmethod
    def read(cls, path: Path, problems: list[Problem]) -> _Source | None:
        src = cls(path)
        try:
            # a device file or FIFO (say /dev/zero) would never end
            if path.exists() and not path.is_file():
                problems.append(Problem(str(path), "cannot read: not a regular file"))
                return None
            if path.stat().st_size > MAX_FILE_BYTES:
                limit = MAX_FILE_BYTES // (1024 * 1024)
                problems.append(Problem(str(path), f"cannot read: larger than {limit} MiB"))
                return None
            src.text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), f"cannot read: {exc}"))
            return None
        try:
            src.data = yamlread.load(src.text, max_depth=MAX_DEPTH, max_nodes=MAX_NODES)
        except yaml.YAMLError as exc:
            if "maximum nesting depth" in str(exc):  # libyaml's own limit (1,000 levels)
                problems.append(Problem(str(path), "too complex: nested too deeply to parse"))
                return None
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problems.append(Problem(str(path), f"invalid YAML: {exc}", line=line))
            return None
        except yamlread.TooComplex as exc:
            problems.append(Problem(str(path), f"too complex: {exc}"))
            return None
        except RecursionError:
            problems.append(Problem(str(path), "too complex: nested too deeply to parse"))
            return None
        if not isinstance(src.data, dict):
            problems.append(Problem(str(path), "top level must be a mapping", line=1))
            return None
        return src

    def line(self, loc: Loc) -> int | None:
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())

    def problem(
        self,
        loc: Loc,
        message: str,
        *,
        device: str | None = None,
        point: str | None = None,
        field: str | None = None,
    ) -> Problem:
        return Problem(str(self.path), message, self.line(loc), device, point, field)


def _errors(
    src: _Source, exc: ValidationError, prefix: Loc, device: str | None, point: str | None
) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        out.append(src.problem(loc, msg, device=device, point=point, field=field))
    return out


def _raw_id(raw: Any) -> str | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def _validate(model: type[BaseModel], raw: Any) -> tuple[Any, ValidationError | None]:
    try:
        return model.model_validate(raw), None
    except ValidationError as exc:
        return None, exc


def _read_mapping(
    src: _Source, problems: list[Problem], port_overrides: Mapping[str, int]
) -> MappingFile | None:
    raw_devices = src.data.get("devices")
    extra = set(src.data) - {"devices"}
    for key in sorted(extra):
        problems.append(src.problem((key,), f"unknown top-level key {key!r}", field=key))
    if not isinstance(raw_devices, list):
        problems.append(src.problem(("devices",), "needs a list `devices`", field="devices"))
        return None
    devices: list[Device] = []
    failed = False
    for i, raw_dev in enumerate(raw_devices):
        dev = _read_device(src, i, raw_dev, problems, port_overrides)
        if dev is None:
            failed = True
        else:
            devices.append(dev)
    return None if failed else MappingFile(devices=devices)


def _read_device(
    src: _Source,
    i: int,
    raw: Any,
    problems: list[Problem],
    port_overrides: Mapping[str, int],
) -> Device | None:
    loc: Loc = ("devices", i)
    dev_id = _raw_id(raw)
    if not isinstance(raw, dict):
        problems.append(src.problem(loc, "a device must be a mapping"))
        return None
    raw = dict(raw)
    raw_points = raw.pop("points", [])
    if dev_id is not None and dev_id in port_overrides and isinstance(raw.get("connection"), dict):
        raw["connection"] = {**raw["connection"], "port": port_overrides[dev_id]}
    before = len(problems)
    dev, exc = _validate(Device, raw)
    if exc is not None:
        problems.extend(_errors(src, exc, loc, dev_id, None))
    elif dev is not None:
        try:
            # relative file references in options resolve against the mapping file
            dev._options = spec_for(dev.protocol).options_model.model_validate(
                dev.options, context={"base_dir": src.path.parent}
            )
        except ValidationError as opt_exc:
            problems.extend(_errors(src, opt_exc, (*loc, "options"), dev_id, None))
    if not isinstance(raw_points, list):
        problems.append(src.problem((*loc, "points"), "points must be a list", device=dev_id))
        return None
    # addresses are checked even when other device fields are wrong, if the protocol is known
    spec = None
    with contextlib.suppress(ValueError, TypeError):
        spec = spec_for(raw.get("protocol"))
    points: list[Point] = []
    addresses: dict[str, Address] = {}
    placed: list[tuple[int, Point, Address]] = []
    for j, raw_pt in enumerate(raw_points):
        ploc: Loc = (*loc, "points", j)
        pt_id = _raw_id(raw_pt)
        pt, pexc = _validate(Point, raw_pt)
        if pexc is not None:
            problems.extend(_errors(src, pexc, ploc, dev_id, pt_id))
            continue
        points.append(pt)
        if spec is None:
            continue
        own = _own_fields(src, spec, pt, ploc, dev_id, problems)
        if own is None:
            continue
        try:
            addr = spec.parse_address(pt.address, pt.typing(own))
        except AddressError as aexc:
            problems.append(
                src.problem(
                    (*ploc, aexc.field), str(aexc), device=dev_id, point=pt.id, field=aexc.field
                )
            )
            continue
        addresses[pt.id] = addr
        placed.append((j, pt, addr))
    _check_overlaps(src, loc, dev_id, placed, problems)
    if dev is not None and spec is not None and spec.check_device is not None:
        rows = {pt.id: j for j, pt, _ in placed}
        for issue in spec.check_device(dev.connection, addresses):
            where: Loc = (
                (*loc, *issue.field.split("."))
                if issue.point is None
                else (*loc, "points", rows[issue.point], issue.field)
            )
            problems.append(
                src.problem(
                    where, issue.message, device=dev_id, point=issue.point, field=issue.field
                )
            )
    if dev is None or len(problems) > before:
        return None
    assert isinstance(dev, Device)
    dev.points = points
    dev._addresses = addresses
    return dev


def _own_fields(
    src: _Source,
    spec: ProtocolSpec,
    pt: Point,
    ploc: Loc,
    dev_id: str | None,
    problems: list[Problem],
) -> BaseModel | None:
    """The point's fields beyond the protocol-neutral ones, validated by the protocol's
    `point_fields` model; None (and the problems recorded) when any is wrong."""
    extra = pt.model_extra or {}
    known = spec.point_fields.model_fields
    unknown = [name for name in extra if name not in known]
    for name in unknown:
        fields = f" (its own fields: {', '.join(known)})" if known else ""
        problems.append(
            src.problem(
                (*ploc, name),
                f"`{name}` does not apply to {spec.name} points{fields}",
                device=dev_id,
                point=pt.id,
                field=name,
            )
        )
    if unknown:
        return None
    own, exc = _validate(spec.point_fields, extra)
    if exc is not None:
        problems.extend(_errors(src, exc, ploc, dev_id, pt.id))
        return None
    assert isinstance(own, BaseModel)
    return own


def _check_overlaps(
    src: _Source,
    loc: Loc,
    dev_id: str | None,
    placed: list[tuple[int, Point, Address]],
    problems: list[Problem],
) -> None:
    """Each point that conflicts with a point before it in the file is reported once,
    against the first such point."""
    earlier: dict[int, int] = {}  # index in `placed` -> first earlier index it conflicts with
    for a, b in _conflicting_pairs([addr for _, _, addr in placed]):
        first, later = min(a, b), max(a, b)
        earlier[later] = min(earlier.get(later, first), first)
    for k, (j, pt, addr) in enumerate(placed):
        if k not in earlier:
            continue
        other, other_addr = placed[earlier[k]][1], placed[earlier[k]][2]
        problems.append(
            src.problem(
                (*loc, "points", j, "address"),
                f"address {addr} overlaps point {other.id!r} at {other_addr}",
                device=dev_id,
                point=pt.id,
                field="address",
            )
        )


def _conflicting_pairs(addresses: list[Address]) -> Iterator[tuple[int, int]]:
    """Index pairs of conflicting addresses. Addresses with a span are swept in address
    order within their space (n log n: a 500-point device has 125,000 pairs); the others
    are compared pairwise."""
    spaces: dict[Hashable, list[tuple[int, int, int]]] = {}
    others: list[int] = []
    for k, addr in enumerate(addresses):
        span = addr.span()
        if span is None:
            others.append(k)
        else:
            spaces.setdefault(span[0], []).append((span[1], span[2], k))
    for members in spaces.values():
        members.sort()
        active: list[tuple[int, int]] = []  # (end, index) of spans that may still overlap
        for first, end, k in members:
            active = [(e, i) for e, i in active if e > first]
            for _, i in active:
                if addresses[k].conflicts_with(addresses[i]):
                    yield i, k
            active.append((end, k))
    for n, k in enumerate(others):
        for i in others[:n]:
            if addresses[k].conflicts_with(addresses[i]):
                yield i, k


def _cross_check(sources: list[tuple[_Source, MappingFile]], problems: list[Problem]) -> None:
    """Ids unique across all files; one device per serial line (a port opens once,
    exclusively)."""
    # where each id was first seen; its line is looked up only for a duplicate
    seen_points: dict[str, tuple[_Source, Loc]] = {}
    seen_devices: dict[str, str] = {}
    seen_lines: dict[str, tuple[str, _Source, Loc]] = {}
    for src, mapping in sources:
        for i, dev in enumerate(mapping.devices):
            serial = dev.connection.serial
            if serial is not None:
                port_loc: Loc = ("devices", i, "connection", "serial", "port")
                if serial.port in seen_lines:
                    problems.append(
                        src.problem(
                            port_loc,
                            f"serial port {serial.port} is already the line of"
                            f" {_first_line(*seen_lines[serial.port])}; one device per serial line:"
                            " map every unit of the line in that device",
                            device=dev.id,
                            field="connection.serial.port",
                        )
                    )
                seen_lines.setdefault(serial.port, (dev.id, src, port_loc))
            if dev.id in seen_devices:
                problems.append(
                    src.problem(
                        ("devices", i, "id"),
                        f"duplicate device id (also in {seen_devices[dev.id]})",
                        device=dev.id,
                        field="id",
                    )
                )
            seen_devices.setdefault(dev.id, str(src.path))
            for j, pt in enumerate(dev.points):  # a loaded file kept every point in order
                loc: Loc = ("devices", i, "points", j)
                if pt.id in seen_points:
                    problems.append(
                        src.problem(
                            (*loc, "id"),
                            f"duplicate point id (first defined in {_where(*seen_points[pt.id])})",
                            device=dev.id,
                            point=pt.id,
                            field="id",
                        )
                    )
                seen_points.setdefault(pt.id, (src, loc))


def _where(src: _Source, loc: Loc) -> str:
    return f"{src.path}:{src.line(loc)}"


def _first_line(device: str, src: _Source, loc: Loc) -> str:
    return f"device {device!r} ({_where(src, loc)})"


def _list(value: Any) -> list[Any]:
    """`value` if the file has a list there; what else it has is reported elsewhere."""
    return value if isinstance(value, list) else []


def _unknown_ders(src: _Source, known_ders: set[str], problems: list[Problem]) -> None:
    """DER references are checked on the file as written, so an unknown DER shows with the
    file's other errors, not after they are fixed."""
    for i, dev in enumerate(_list(src.data.get("devices"))):
        if not isinstance(dev, dict):
            continue
        for j, pt in enumerate(_list(dev.get("points"))):
            der = pt.get("der") if isinstance(pt, dict) else None
            if isinstance(der, str) and der not in known_ders:
                problems.append(
                    src.problem(
                        ("devices", i, "points", j, "der"),
                        f"unknown DER {der!r} (known: {', '.join(sorted(known_ders))})",
                        device=_raw_id(dev),
                        point=_raw_id(pt),
                        field="der",
                    )
                )


def _duplicate_point_ids_within(src: _Source, problems: list[Problem]) -> None:
    """Duplicates inside one file are found even when the file has other errors."""
    seen: dict[str, int | None] = {}
    for i, dev in enumerate(_list(src.data.get("devices"))):
        if not isinstance(dev, dict):
            continue
        for j, pt in enumerate(_list(dev.get("points"))):
            pid = _raw_id(pt)
            if pid is None:
                continue
            loc: Loc = ("devices", i, "points", j, "id")
            if pid in seen:
                problems.append(
                    src.problem(
                        loc,
                        f"duplicate point id (first defined at line {seen[pid]})",
                        device=_raw_id(dev),
                        point=pid,
                        field="id",
                    )
                )
            else:
                seen[pid] = src.line(loc)


def load_mappings(
    paths: Iterable[Path],
    *,
    known_ders: set[str] | None = None,
    port_overrides: Mapping[str, int] | None = None,
) -> dict[Path, MappingFile]:
    """Read and check mapping files; raise ConfigError listing every problem."""
    problems: list[Problem] = []
    result = _load_mappings(list(paths), known_ders, port_overrides or {}, problems)
    if problems:
        raise ConfigError(problems)
    return result


def _load_mappings(
    paths: list[Path],
    known_ders: set[str] | None,
    port_overrides: Mapping[str, int],
    problems: list[Problem],
) -> dict[Path, MappingFile]:
    loaded: list[tuple[_Source, MappingFile]] = []
    for path in paths:
        src = _Source.read(path, problems)
        if src is None:
            continue
        n = len(problems)
        mapping = _read_mapping(src, problems, port_overrides)
        if mapping is not None:
            loaded.append((src, mapping))
        elif len(problems) == n:  # pragma: no cover - _read_mapping always says why
            problems.append(src.problem((), "invalid mapping file"))
        if mapping is None:
            _duplicate_point_ids_within(src, problems)
        if known_ders is not None:
            _unknown_ders(src, known_ders, problems)
    _cross_check(loaded, problems)
    return {src.path: m for src, m in loaded}


def _raw_known_ders(data: dict[str, Any]) -> set[str] | None:
    """DER ids (and the coupling point's) of a config that did not validate, as far as
    its `ders` list can be read; None when it cannot (no DER references are checked)."""
    raw = data.get("ders", [])
    if not isinstance(raw, list):
        return None
    known = {i for d in raw if (i := _raw_id(d)) is not None}
    pcc = data.get("coupling_point")
    pcc_id = _raw_id(pcc) if isinstance(pcc, dict) else None
    return {*known, pcc_id or "pcc"}


def _check_key_files(src: _Source, cfg: GatewayConfig, problems: list[Problem]) -> None:
    """The north signing key and trust file are read here, so a bad key (an RSA key under
    2048 bits, a file that is not a key) is a config problem, not a failure at start."""
    if cfg.north is None:
        return
    # imported here: the loader stays light for the commands that never go north
    from gateway.smartapi.security.keys import TrustStore, load_private_key

    signing = cfg.north.signing.resolved(src.path.parent)
    try:
        load_private_key(signing.key)
    except KeyFileError as exc:
        field = "north.signing.key"
        problems.append(src.problem(("north", "signing", "key"), str(exc), field=field))
    try:
        TrustStore.from_file(signing.trust)
    except KeyFileError as exc:
        # the trust file is at fault, whichever key file it names
        problems.append(Problem(str(signing.trust), f"trust file: {exc}"))


def _check_billing_meter(
    src: _Source, cfg: GatewayConfig, mappings: dict[Path, MappingFile], problems: list[Problem]
) -> None:
    meter = cfg.coupling_point.billing_meter
    if meter is None:
        return
    device = next((d for m in mappings.values() for d in m.devices if d.id == meter), None)
    pcc = cfg.coupling_point.id
    if device is None:
        message = f"billing meter {meter!r} is no device of the mapping files"
    elif not any(p.der == pcc and p.quantity in ENERGY_COUNTERS for p in device.points):
        message = f"billing meter {meter!r} maps no energy counter of {pcc!r}"
    else:
        return
    loc = ("coupling_point", "billing_meter")
    problems.append(src.problem(loc, message, device=meter, field="billing_meter"))


def load_config(
    path: Path, *, port_overrides: Mapping[str, int] | None = None, check_keys: bool = False
) -> LoadedConfig:
    """Read the gateway config and every mapping file it names; raise ConfigError.
    `check_keys` also reads the north signing key and trust file (what `mgms run` and
    `mgms check` need; the simulator and tools that write the keys do not)."""
    problems: list[Problem] = []
    loaded = _load_config(path, port_overrides or {}, problems, check_keys)
    if problems or loaded is None:
        raise ConfigError(problems or [Problem(str(path), "invalid config")])
    return loaded


def _load_config(
    path: Path,
    port_overrides: Mapping[str, int],
    problems: list[Problem],
    check_keys: bool,
    src: _Source | None = None,
) -> LoadedConfig | None:
    """`src`: the config file when the caller has read it already."""
    src = src or _Source.read(path, problems)
    if src is None:
        return None
    cfg, exc = _validate(GatewayConfig, src.data)
    if exc is not None:
        problems.extend(_errors(src, exc, (), None, None))
        # a config error must not hide the mappings' errors: check what the file names
        raw_paths = [m for m in _list(src.data.get("mappings")) if isinstance(m, str)]
        paths = [(path.parent / m).resolve() for m in raw_paths]
        _load_mappings(paths, _raw_known_ders(src.data), port_overrides, problems)
        return None
    assert isinstance(cfg, GatewayConfig)
    base = path.parent
    cfg.state_dir = (base / cfg.state_dir).resolve()
    cfg.mappings = [(base / m).resolve() for m in cfg.mappings]
    if cfg.ops.operator_token_file is not None:
        cfg.ops.operator_token_file = (base / cfg.ops.operator_token_file).resolve()
    der_ids = [d.id for d in cfg.ders]
    for i, der_id in enumerate(der_ids):
        if der_id in der_ids[:i] or der_id == cfg.coupling_point.id:
            problems.append(
                src.problem(("ders", i, "id"), f"duplicate DER id {der_id!r}", field="id")
            )
    known = {*der_ids, cfg.coupling_point.id}
    mappings = _load_mappings(cfg.mappings, known, port_overrides, problems)
    _check_billing_meter(src, cfg, mappings, problems)
    if check_keys:
        _check_key_files(src, cfg, problems)
    if problems:
        return None
    return LoadedConfig(source=path.resolve(), gateway=cfg, mappings=mappings)


def check_files(paths: Iterable[Path]) -> list[Problem]:
    """Validate config and/or mapping files; a config also checks the mappings it names."""
    problems: list[Problem] = []
    mapping_paths: list[Path] = []
    for path in paths:
        src = _Source.read(path, problems)
        if src is None:
            continue
        if "microgrid" in src.data:
            _load_config(path, {}, problems, check_keys=True, src=src)
        else:
            mapping_paths.append(path)
    _load_mappings(mapping_paths, None, {}, problems)
    return problems
