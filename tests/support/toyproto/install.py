"""Installs the toy protocol the way pip would leave a third-party distribution: a
`.dist-info` folder whose entry_points.txt names the spec in the `mgms.protocols` group."""

from __future__ import annotations

from pathlib import Path

from gateway.protocols.base import ENTRY_POINT_GROUP

SPEC_ENTRY = "toy = tests.support.toyproto.protocol:SPEC"


def install_distribution(site: Path, entries: str = SPEC_ENTRY) -> Path:
    """Write the distribution's metadata into `site` (a folder to put on sys.path)."""
    info = site / "toyproto-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyproto\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entries}\n")
    return site
