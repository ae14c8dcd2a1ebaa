"""A small site for loader and simulator tests: a gateway config with one battery (`bess`)
and one mapping file (`m.yaml`) beside it."""

from __future__ import annotations

import textwrap
from pathlib import Path

SITE_CONFIG = """
microgrid: {id: mg}
state_dir: state
mappings: [m.yaml]
coupling_point: {import_limit_kw: 100, export_limit_kw: 100}
ders:
  - {id: bess, type: battery, ratings: {p_min_kw: -50, p_max_kw: 50, energy_kwh: 100}}
"""


def write_site(folder: Path, mapping: str, config: str = SITE_CONFIG) -> Path:
    """Write `m.yaml` and `gw.yaml` (dedented) into `folder`; the config's path."""
    (folder / "m.yaml").write_text(textwrap.dedent(mapping))
    path = folder / "gw.yaml"
    path.write_text(textwrap.dedent(config))
    return path
