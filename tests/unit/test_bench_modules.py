"""Every benchmark module imports: a bench is run by hand, so a renamed module or class in
the product would otherwise break it unseen (bench/modbus_rtu.py did)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(
    f"bench.{path.stem}" for path in BENCH.glob("*.py") if path.stem != "__init__"
) + sorted(f"bench.soaklib.{path.stem}" for path in (BENCH / "soaklib").glob("*.py"))


def test_the_benches_are_found() -> None:
    assert {"bench.scale", "bench.latency", "bench.soak", "bench.soaklib.ams"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_bench_module_imports(module: str) -> None:
    importlib.import_module(module)
