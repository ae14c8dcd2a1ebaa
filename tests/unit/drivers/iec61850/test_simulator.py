"""The simulated IED refuses a mapping it cannot serve, naming what is wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drivers.iec61850.simulator import Iec61850FrontEnd
from fwsim.runner import build_grid
from gateway.loader import load_config
from tests.support.procs import free_port

CONFIG = """
microgrid: {id: mg}
state_dir: state
mappings: [ied.yaml]
coupling_point: {import_limit_kw: 10, export_limit_kw: 10}
ders:
  - {id: bess, type: battery, ratings: {p_min_kw: -10, p_max_kw: 10, energy_kwh: 20}}
"""

MAPPING = """
devices:
  - id: ied
    protocol: iec61850
    connection: {host: 127.0.0.1, port: 1}
    options:
      data_sets:
        - {reference: LD0/LLN0.Meas, members: [%s]}
    points:
      - {id: p, address: LD0/MMXU1.TotW.mag.f@MX, unit: KiloW, der: bess, quantity: active_power}
      - id: p_set
        address: %s
        type: float32
        unit: KiloW
        direction: read-write
        der: bess
        quantity: active_power_setpoint
"""


def front_end(tmp_path: Path, member: str, control: str) -> Iec61850FrontEnd:
    (tmp_path / "ied.yaml").write_text(textwrap.dedent(MAPPING % (member, control)))
    (tmp_path / "gw.yaml").write_text(textwrap.dedent(CONFIG))
    config = load_config(tmp_path / "gw.yaml")
    return Iec61850FrontEnd(config.devices[0], build_grid(config), "127.0.0.1", free_port())


@pytest.mark.parametrize(
    ("member", "control", "needle"),
    [
        ("LD0/MMXU1.Hz@MX", "LD0/DRCC1.WSpt@CO", "member LD0/MMXU1.Hz@MX is no mapped point's"),
        ("LD0/MMXU1.TotW@ST", "LD0/DRCC1.WSpt@CO", "member LD0/MMXU1.TotW@ST is no mapped"),
        ("LD0/MMXU1.TotW@MX", "LD0/DRCC1.W.Spt@CO", "must be a data object of its LN"),
    ],
)
async def test_unservable_mapping_is_refused(
    tmp_path: Path, member: str, control: str, needle: str
) -> None:
    front = front_end(tmp_path, member, control)
    with pytest.raises(ValueError, match=needle):
        await front.start()
    await front.stop()


async def test_a_served_data_set_member_may_be_a_control_status(tmp_path: Path) -> None:
    front = front_end(tmp_path, "LD0/DRCC1.WSpt@MX", "LD0/DRCC1.WSpt@CO")
    await front.start()
    await front.stop()
