"""Simulator processes on free loopback ports for tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from fwsim.process import ROOT, SimProcess, child_env, free_port, free_ports, start_sim

DEMO_CONFIG = ROOT / "config" / "demo.yaml"

__all__ = [
    "DEMO_CONFIG",
    "ROOT",
    "SimProcess",
    "child_env",
    "demo_config_with",
    "free_port",
    "sim_process",
    "start_sim",
]


def demo_config_with(mappings: Sequence[str]) -> dict[str, Any]:
    """The demo config (its DERs and coupling point) with other mapping files: the demo's
    billing meter is a device of the demo's own mappings, so it is left out."""
    config: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    config["mappings"] = list(mappings)
    config["coupling_point"].pop("billing_meter", None)
    return config


@contextmanager
def sim_process(
    device_ids: Sequence[str],
    config: Path = DEMO_CONFIG,
    extra: Sequence[str] = (),
) -> Iterator[SimProcess]:
    """A simulator serving `device_ids` of `config`, each on a fresh free port."""
    ports = dict(zip(device_ids, free_ports(len(device_ids)), strict=True))
    sim = start_sim(config, ports, devices=device_ids, extra=extra)
    try:
        yield sim
    finally:
        sim.stop()
