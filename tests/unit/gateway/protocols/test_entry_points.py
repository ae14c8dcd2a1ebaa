"""Protocols join through the `mgms.protocols` entry-point group and nowhere else: the
shipped five, and a third-party one declared by an installed distribution's metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.base import Driver
from fwsim.frontend import FrontEnd
from gateway.protocols import base, known_protocols, spec_for
from gateway.protocols.base import ENTRY_POINT_GROUP, ProtocolSpec, load_class, load_entry_points


def test_the_shipped_protocols_come_from_the_entry_points() -> None:
    assert known_protocols() == ["cems", "dlms", "iec104", "iec61850", "modbus"]


@pytest.mark.parametrize("name", ["cems", "dlms", "iec104", "iec61850", "modbus"])
def test_each_spec_names_its_driver_and_front_end(name: str) -> None:
    spec = spec_for(name)
    assert spec.driver is not None and spec.front_end is not None
    assert issubclass(load_class(spec.driver), Driver)
    assert issubclass(load_class(spec.front_end), FrontEnd)


def _install(site: Path, entries: str) -> None:
    """A distribution's metadata as pip leaves it in site-packages."""
    info = site / "toyproto-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyproto\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entries}\n")


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, ProtocolSpec]:
    known_protocols()  # the shipped ones loaded first
    fresh = dict(base._REGISTRY)
    monkeypatch.setattr(base, "_REGISTRY", fresh)
    return fresh


def test_an_installed_distribution_adds_a_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: dict[str, ProtocolSpec]
) -> None:
    _install(tmp_path, "toy = tests.unit.gateway.protocols.toy_spec:SPEC")
    monkeypatch.syspath_prepend(str(tmp_path))
    load_entry_points()
    assert spec_for("toy").options_model.__name__ == "ToyOptions"
    assert "toy" in known_protocols()


def test_an_entry_point_under_another_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: dict[str, ProtocolSpec]
) -> None:
    _install(tmp_path, "other = tests.unit.gateway.protocols.toy_spec:SPEC")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"entry point other = .*calls itself 'toy'"):
        load_entry_points()


def test_an_entry_point_naming_no_spec_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: dict[str, ProtocolSpec]
) -> None:
    _install(tmp_path, "toy = tests.unit.gateway.protocols.toy_spec:ToyOptions")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="not a ProtocolSpec"):
        load_entry_points()


def test_metadata_without_the_group_says_so(
    monkeypatch: pytest.MonkeyPatch, registry: dict[str, ProtocolSpec]
) -> None:
    """An old *.egg-info on sys.path shadows the installed metadata: say that, not
    'unknown protocol' for every device."""
    monkeypatch.setattr(base, "entry_points", lambda group: [])
    with pytest.raises(RuntimeError, match="metadata is missing or stale; reinstall"):
        load_entry_points()
