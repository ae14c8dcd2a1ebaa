from __future__ import annotations

import pytest

from gateway.config import LoadedConfig
from gateway.loader import load_config
from gateway.model import Quality, QualityFlag, Reading
from gateway.points import PointTable
from tests.support.procs import DEMO_CONFIG


@pytest.fixture(scope="session")
def demo_config() -> LoadedConfig:
    return load_config(DEMO_CONFIG)


@pytest.fixture
def table(demo_config: LoadedConfig) -> PointTable:
    t = PointTable(demo_config)
    t.update(
        [
            Reading(point="bess1.p", value=-12.5, unit="KiloW"),
            Reading(point="bess1.soc", value=55.0, unit="PERCENT"),
            Reading(point="bess1.online", value=True, unit="UNITLESS"),
            Reading(point="pcc.p", value=30.25, unit="KiloW"),
            Reading(
                point="pv1.p",
                value=None,
                unit="KiloW",
                quality=Quality.invalid(QualityFlag.COMM_FAILURE),
            ),
        ]
    )
    return t
